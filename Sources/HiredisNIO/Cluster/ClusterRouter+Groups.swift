// Commands that must run together on one node, following redirections as a unit: a transaction,
// and a redirected command with the reads that describe it.
extension ClusterRouter {
    /// A `MULTI`…`EXEC` block whose keys share `slot`, on one connection of the slot's primary. A
    /// block refused because the slot moved (`MOVED` while queuing makes `EXEC` answer
    /// `EXECABORT`) ran nowhere: it goes again, whole, to the new owner. An `ASK` (the slot is
    /// migrating) is returned as it is: the caller's retry finds the slot settled.
    /// `timeout` bounds the whole call, every hop included.
    func transaction(_ block: [RESPCommand], slot: Int?, timeout: Duration) async throws -> [RESPReply] {
        let deadline = ContinuousClock.now + timeout
        var address = try await primary(forSlot: slot, deadline: deadline)
        for _ in 0...configuration.maximumRedirections {
            let replies: [RESPReply]
            do {
                let connection = try await pool(address).connection(deadline: deadline)
                replies = try await connection.pipeline(block, timeout: try Self.left(until: deadline, of: timeout))
            } catch let error as HiredisError {
                if error.code == .connectionLost || error.code == .cannotConnect { requestRefresh() }
                throw error
            }
            let moved = replies.lazy.compactMap { reply -> Redirection? in
                guard case .error(let text) = reply else { return nil }
                return self.redirection(.server(HiredisServerError(reply: text)), from: address)
            }.first { $0.kind == .moved }
            guard let moved else { return replies }
            address = try await follow(moved, from: address, deadline: deadline).address
        }
        throw HiredisError.tooManyRedirections(configuration.maximumRedirections)
    }

    /// A keyed command and the commands that describe it, sent as one unit on one connection to
    /// where `redirection` (from the node at `replying`) points, following its further redirections,
    /// by `deadline` (that of the caller's call of `timeout`).
    func sendGroup(
        _ group: [RESPCommand], keyed: Int, redirection first: Redirection, from replying: String,
        deadline: ContinuousClock.Instant, of timeout: Duration
    ) async throws -> [RESPReply] {
        var redirection = first
        var replying = replying
        for _ in 0..<configuration.maximumRedirections {
            let (asking, address) = try await follow(redirection, from: replying, deadline: deadline)
            replying = address
            let connection = try await pool(address).connection(deadline: deadline)
            var replies = try await connection.pipeline(
                asking ? [RESPCommand("ASKING")] + group : group, timeout: try Self.left(until: deadline, of: timeout))
            if asking { replies.removeFirst() }
            guard case .error(let text) = replies[keyed] else { return replies }
            if waitsForItsSlot(group[keyed], replied: text) {
                return try await sendScriptGroupWhenSettled(group, keyed: keyed, replies: replies, deadline: deadline, of: timeout)
            }
            guard let next = self.redirection(.server(HiredisServerError(reply: text)), from: address) else { return replies }
            if next.kind == .ask, group[keyed].runsScript {
                return try await sendScriptGroupWhenSettled(group, keyed: keyed, replies: replies, deadline: deadline, of: timeout)
            }
            redirection = next
        }
        throw HiredisError.tooManyRedirections(configuration.maximumRedirections)
    }

    /// The least time a try of a waiting group starts with (see
    /// ``sendScriptGroupWhenSettled(_:keyed:replies:deadline:of:)``).
    static let lastTryMinimum: Duration = .milliseconds(100)

    /// Whether `command` runs a script that its slot's migration refused: `TRYAGAIN` from the
    /// script itself (the store's functions answer so while their slot migrates, having written
    /// nothing) or from Redis. It goes again, with what describes it, once the slot is settled.
    /// Only with ``HiredisConfiguration/retryTransientErrors``, as a single command.
    func waitsForItsSlot(_ command: RESPCommand, replied text: String) -> Bool {
        configuration.retryTransientErrors && command.runsScript && HiredisServerError(reply: text).code == "TRYAGAIN"
    }

    /// A group whose keyed command runs a script and was answered `ASK` (or `TRYAGAIN`, see
    /// ``waitsForItsSlot(_:replied:)``): sent again, whole, to the
    /// slot's owner, with back-off, until the slot no longer migrates (see
    /// ``ClusterRouter/scriptWaitsForItsSlot``), by `deadline`. When the time runs out the keyed
    /// reply is the last refusal (`TRYAGAIN`; an `ASK` becomes that passing refusal): the script
    /// never ran. A try is not started with less than ``lastTryMinimum`` left, so that the
    /// group ends with that refusal rather than a timeout that may have run it.
    func sendScriptGroupWhenSettled(
        _ group: [RESPCommand], keyed: Int, replies: [RESPReply], deadline: ContinuousClock.Instant, of timeout: Duration
    ) async throws -> [RESPReply] {
        var backoff = RetryBackoff()
        var last = replies
        func refused() -> [RESPReply] {
            if case .error(let text) = last[keyed], HiredisServerError(reply: text).code == "TRYAGAIN" { return last }
            last[keyed] = .error(Self.scriptWaitsForItsSlot.description)
            return last
        }
        while true {
            guard let pause = backoff.next(left: deadline - .now - Self.lastTryMinimum) else { return refused() }
            try await Task.sleep(for: pause)
            let address = try await primary(forSlot: group[keyed].slot, deadline: deadline)
            let remaining = deadline - .now
            guard remaining > Self.lastTryMinimum else { return refused() }
            last = try await pool(address).connection(deadline: deadline).pipeline(group, timeout: remaining)
            guard case .error(let text) = last[keyed] else { return last }
            if waitsForItsSlot(group[keyed], replied: text) { continue }
            guard let next = redirection(.server(HiredisServerError(reply: text)), from: address) else { return last }
            if next.kind == .ask { continue }
            return try await sendGroup(group, keyed: keyed, redirection: next, from: address, deadline: deadline, of: timeout)
        }
    }
}
