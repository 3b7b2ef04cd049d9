import Foundation
import HiredisNIO
import SessionCache
import TestSupport
import Testing

@Suite("A user's devices")
struct DeviceTests {
    /// The list of devices shows each of the user's sessions with its label, times and whether it
    /// is the current one, under a handle that is not the session's id; the handle ends that
    /// session and no other, and only for its own user.
    @Test func devicesCarryHandlesNotIdsAndAHandleEndsOnlyItsOwnUsersSession() async throws {
        try await withStore { fixture in
            let store = fixture.store
            let laptop = try await store.create(user: "alice")
            try await Task.sleep(for: .milliseconds(5))  // ordered by last write, in Redis milliseconds
            let phone = try await store.create(user: "alice")
            let bobs = try await store.create(user: "bob")
            try await store.setDevice(laptop.id, label: "Firefox on Linux")
            try await store.setDevice(phone.id, label: "Alice's phone")
            try await store.setDevice(phone.id, label: nil)
            try await store.setDevice(phone.id, label: "Safari on iOS")

            let devices = try await store.devices(user: "alice", current: phone.id)
            #expect(devices.map(\.device) == ["Safari on iOS", "Firefox on Linux"])
            #expect(devices.map(\.isCurrent) == [true, false])
            #expect(devices[1].createdAt == laptop.createdAt)
            #expect(devices.allSatisfy { $0.lastActivity >= $0.createdAt })
            // Nothing of an id in what a page would get.
            let json = String(decoding: try JSONEncoder().encode(devices), as: UTF8.self)
            #expect(!json.contains(laptop.id) && !json.contains(phone.id) && !json.contains(laptop.id.prefix(9)))
            #expect(Set(devices.map(\.handle)).count == 2)

            // Another user's handle ends nothing of bob's, and bob's handle nothing of alice's.
            let bobsHandle = try #require(try await store.devices(user: "bob").first?.handle)
            #expect(try await store.endSession(handle: bobsHandle, user: "alice") == false)
            #expect(try await store.endSession(handle: devices[1].handle, user: "bob") == false)
            #expect(try await store.get(bobs.id) != nil)
            #expect(try await store.get(laptop.id) != nil)

            #expect(try await store.endSession(handle: devices[1].handle, user: "alice"))
            #expect(try await store.get(laptop.id) == nil)
            #expect(try await store.get(phone.id) != nil)
            #expect(try await store.endSession(handle: devices[1].handle, user: "alice") == false, "ended once")
            #expect(try await store.devices(user: "alice", current: phone.id).map(\.isCurrent) == [true])
        }
    }

    /// Bad input is a typed error that changes nothing.
    @Test func badLabelsAndHandlesAreTypedErrors() async throws {
        try await withStore { fixture in
            let store = fixture.store
            let session = try await store.create(user: "carol")
            try await store.setDevice(session.id, label: "tablet")
            for label in [String(repeating: "x", count: 129), "line\nbreak", "\u{7F}"] {
                await #expect(throws: SessionError.invalidDeviceLabel) { try await store.setDevice(session.id, label: label) }
            }
            #expect(try await store.devices(user: "carol").map(\.device) == ["tablet"])
            for handle in ["", "0123", String(repeating: "A", count: 24), String(repeating: "g", count: 24), session.id] {
                await #expect(throws: SessionError.invalidHandle) { try await store.endSession(handle: handle, user: "carol") }
            }
            #expect(try await store.get(session.id) != nil)
            let ended = try await store.create(user: "carol")
            try await store.delete(ended.id)
            await #expect(throws: SessionError.notFound) { try await store.setDevice(ended.id, label: "gone") }
        }
    }
}
