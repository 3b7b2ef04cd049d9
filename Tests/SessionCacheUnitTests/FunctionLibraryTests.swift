import Foundation
import HiredisNIO
import Testing

@testable import SessionCache

@Suite("The function library")
struct FunctionLibraryTests {
    /// sessions.lua, read from the source tree.
    static let luaFile = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Sources/SessionCache/Functions/sessions.lua")

    /// The EmbedFunctions build plugin's constant is the file, byte for byte.
    @Test func theEmbeddedSourceIsSessionsLua() throws {
        let file = try String(contentsOf: Self.luaFile, encoding: .utf8)
        #expect(SessionFunctions.source == file)
    }

    @Test func everyWrapperNamesARegisteredFunction() throws {
        let source = SessionFunctions.source
        let library = SessionFunctions.library
        // The layout version names the library and its functions' prefix.
        #expect(library.name == "session_cache_\(SessionCacheVersion.redisLayout)")
        #expect(SessionFunctions.prefix == "session_\(SessionCacheVersion.redisLayout)_")
        #expect(SessionCacheVersion.redisLayout == "v3")
        let names = [
            CreateFunction.name, TouchFunction.name, HeartbeatFunction.name, ResumeFunction.name,
            GetFunction.name, RecentMessagesFunction.name, AppendFunction.name, ClearMessagesFunction.name,
            SetMetadataFunction.name, RotateFunction.name, DeleteFunction.name, DeleteUserFunction.name, ListFunction.name,
            StatsFunction.name, ClaimFunction.name, RenewFunction.name, FinalizeFunction.name, ListenersFunction.name,
            BindBeginFunction.name, BindPlaceFunction.name, BindFinishFunction.name, CapUserFunction.name, BindUndoFunction.name,
            PartnerFunction.name,
            LockTakeFunction.name, LockAcquireFunction.name, LockReleaseFunction.name, LockExtendFunction.name, LockAbandonFunction.name,
        ]
        for name in names { #expect(source.contains("register('\(name)', "), "\(name) is not registered") }
        for readOnly in [GetFunction.name, RecentMessagesFunction.name, ListFunction.name, StatsFunction.name, PartnerFunction.name] {
            #expect(source.contains("register('\(readOnly)', \(readOnly), true)"), "\(readOnly) must be no-writes (FCALL_RO)")
        }
    }

    /// Function names are global in Redis and app servers of two versions may share one during a
    /// rolling deploy: a changed library must get a new version. This fails when the code changes
    /// without one; then bump `session_cache_vN` and `session_vN_` (or, for a compatible change,
    /// the fingerprint below).
    @Test func aChangedLibraryGetsANewVersion() {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in SessionFunctions.source.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01B3
        }
        let fingerprint = String(hash, radix: 16)
        #expect(fingerprint == Self.fingerprintOfV3, "sessions.lua changed: its fingerprint is \(fingerprint)")
    }

    // v3: lock_release, lock_extend and lock_abandon reply with a status word (the word alone),
    // like every call about one session or lock (new replies: a new library name). v3 was never
    // released before lock_take, fences kept in the session hash, bind_place's cap arguments and
    // import_redeem joined it, with cap_user (0.1.0 is its first release), so the name stays.
    // After 0.1.0, compatible changes only: devices, end_device and set_device were added (every
    // earlier function keeps its arguments and replies; `list` reads two more fields and answers
    // as before). A server with either source serves app servers of both: a 0.1.0 server never
    // calls the new functions, and a newer one that finds them missing loads its source.
    // Revision 1 (`-- revision: 1`) adds those and makes every writing function answer TRYAGAIN,
    // having written nothing, while its slot migrates; app servers replace an older revision in
    // place (HiredisClient.upgradeInPlace), so the guard reaches running clusters. A compatible
    // change raises the revision and this fingerprint; an incompatible one, the name.
    static let fingerprintOfV3 = "333c0360d045430d"
}
