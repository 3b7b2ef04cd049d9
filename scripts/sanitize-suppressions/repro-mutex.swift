import Foundation
import Synchronization

// Two threads change one value, each under the same Synchronization.Mutex.
final class Counter: Sendable {
    let state = Mutex(0)
}
let counter = Counter()
let done = DispatchSemaphore(value: 0)
for _ in 0..<2 {
    Thread {
        for _ in 0..<10_000 { counter.state.withLock { $0 += 1 } }
        done.signal()
    }.start()
}
done.wait()
done.wait()
print("count", counter.state.withLock { $0 })
