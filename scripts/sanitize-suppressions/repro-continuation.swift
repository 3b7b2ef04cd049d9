import Foundation

final class Box: @unchecked Sendable { var value = 0 }

// A value made on a plain thread and handed to a task with UnsafeContinuation.resume: the pattern
// HiredisNIO uses (the event loop makes the reply, the caller's task reads it).
func handOff() async -> Box {
    await withUnsafeContinuation { (continuation: UnsafeContinuation<Box, Never>) in
        let thread = Thread {
            let box = Box()
            box.value = 42
            continuation.resume(returning: box)
        }
        thread.start()
    }
}

let total = await Task.detached {
    var total = 0
    for _ in 0..<200 {
        let box = await handOff()
        total += box.value
    }
    return total
}.value
print("total", total)
