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
}
