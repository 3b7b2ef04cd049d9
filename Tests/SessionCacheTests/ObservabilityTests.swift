import HiredisNIO
import InMemoryTracing
import SessionCache
import Testing
import Tracing

@Suite("Observability")
struct ObservabilityTests {
    @Test func everyOperationIsASpanWithDatabaseAttributes() async throws {
        let tracer = InMemoryTracer()
        let id = try await withStore(configure: { $0.tracer = tracer }) { fixture in
            let session = try await fixture.store.create(user: "alice")
            try await fixture.store.touch(session.id)
            // Well formed, but no such session: the span records the error.
            _ = await expectSessionError { try await fixture.store.touch("AAA" + String(repeating: "B", count: 24)) }
            return session.id
        }
        let session = (id: id, ())
        let spans = tracer.finishedSpans
        #expect(spans.map(\.operationName) == ["session.create", "session.touch", "session.touch"])
        for span in spans {
            #expect(span.kind == .client)
            #expect(span.attributes["db.system.name"]?.toSpanAttribute() == "redis")
            #expect(span.attributes["db.namespace"]?.toSpanAttribute() == "test")
        }
        #expect(spans[1].attributes["db.operation.name"]?.toSpanAttribute() == "touch")
        #expect(spans[2].errors.count == 1)
        // The span carries a prefix of the id only: the id is a bearer secret.
        guard case .string(let prefix)? = spans[1].attributes["session.id_prefix"]?.toSpanAttribute() else {
            Issue.record("no id prefix")
            return
        }
        #expect(prefix.count <= 10 && session.id.hasPrefix(prefix))
    }

    @Test func eachCleanupHookIsASpanAndTheHooksSpansAreItsChildren() async throws {
        let tracer = InMemoryTracer()
        try await withStore(configure: listenerConfiguration) { fixture in
            let recorder = HookRecorder()
            var configuration = fastListener()
            configuration.tracer = tracer
            let listener = try RunningListener.start(fixture, configuration: configuration) { expired in
                tracer.withSpan("app.cleanup") { _ in recorder.record(expired) }
            }
            let session = try await fixture.store.create(user: "alice")
            try await fixture.store.delete(session.id)
            #expect(await recorder.wait(forSessions: 1, timeout: .seconds(10)))
            await listener.stop()
            let spans = tracer.finishedSpans
            let hook = try #require(spans.first { $0.operationName == "session.expiry.hook" })
            #expect(hook.attributes["session.expiry.reason"]?.toSpanAttribute() == "deleted")
            #expect(hook.attributes["session.expiry.outcome"]?.toSpanAttribute() == "completed")
            #expect(hook.attributes["session.expiry.attempts"]?.toSpanAttribute() == 1)
            guard case .string(let prefix)? = hook.attributes["session.id_prefix"]?.toSpanAttribute() else {
                Issue.record("no id prefix")
                return
            }
            #expect(prefix.count <= 10 && session.id.hasPrefix(prefix))
            let cleanup = try #require(spans.first { $0.operationName == "app.cleanup" })
            #expect(cleanup.parentSpanID == hook.spanID && cleanup.traceID == hook.traceID)
        }
    }

    @Test func aLockedBodyIsASpanWithItsAcquireReleaseAndWritesAsChildren() async throws {
        let tracer = InMemoryTracer()
        try await withStore(configure: { $0.tracer = tracer }) { fixture in
            var configuration = SessionLockConfiguration()
            configuration.tracer = tracer
            let locks = SessionLock.started(store: fixture.store, configuration: configuration)
            let session = try await fixture.store.create(user: "alice")
            let fence = try await locks.withLock(session.id) { lease in
                try await fixture.store.setMetadata(session.id, key: "k", value: 1, lease: lease)
                return lease.fence
            }
            let spans = tracer.finishedSpans
            let hold = try #require(spans.first { $0.operationName == "session.lock.hold" })
            #expect(hold.kind == .internal)
            for name in ["session.lock.acquire", "session.set_metadata", "session.lock.release"] {
                let child = try #require(spans.first { $0.operationName == name }, "no span \(name)")
                #expect(child.parentSpanID == hold.spanID && child.traceID == hold.traceID, "\(name) is not a child of the hold")
            }
            let acquire = try #require(spans.first { $0.operationName == "session.lock.acquire" })
            #expect(acquire.kind == .client)
            #expect(acquire.attributes["session.lock.fence"]?.toSpanAttribute() == .int64(Int64(fence)))
            guard case .string(let prefix)? = acquire.attributes["session.id_prefix"]?.toSpanAttribute() else {
                Issue.record("no id prefix")
                return
            }
            #expect(prefix.count <= 10 && session.id.hasPrefix(prefix))
        }
    }
}
