/// The life of one Redis connection as its channel handler sees it: a plain state machine (event
/// in, action out), unit-tested without a channel.
///
/// ```
/// initialized ─► active ─► subscribed
///      │           │           │
///      └───────────┴───────────┴─► closing(error) ─► closed(error)
///                                  (we close)       (channel inactive or handler removed)
/// ```
///
/// The first error that ends the connection is the one every waiting and later caller gets; a
/// later event (the channel going inactive after we closed it) never replaces it.
struct ConnectionStateMachine<PushSink> {
    enum State {
        /// The handler is added; the channel is not active yet.
        case initialized
        /// Commands are written and their replies matched in order.
        case active
        /// Every reply is a push message for the sink (after SUBSCRIBE/PSUBSCRIBE).
        case subscribed(PushSink)
        /// The handler decided to close (protocol error, presumed dead, caller's request): what
        /// waits is failed; the channel's close is under way.
        case closing(HiredisError)
        /// The channel is gone.
        case closed(HiredisError)
    }

    /// What the handler does when the connection ends.
    enum CloseAction {
        /// Fail every command waiting (queued or written) with the error, then close the channel.
        case failAllAndCloseChannel(HiredisError)
        /// Fail every command waiting with the error; the channel is already closed.
        case failAll(HiredisError)
        /// Already closed.
        case none
    }

    private(set) var state: State = .initialized

    /// Whether commands may be written (not closing or closed).
    var isOpen: Bool {
        switch state {
        case .initialized, .active, .subscribed: true
        case .closing, .closed: false
        }
    }

    /// The error that ended the connection, once it is ending.
    var closedError: HiredisError? {
        switch state {
        case .closing(let error), .closed(let error): error
        case .initialized, .active, .subscribed: nil
        }
    }

    /// The sink of push messages, in subscriber mode.
    var pushSink: PushSink? {
        if case .subscribed(let sink) = state { return sink }
        return nil
    }

    /// The channel became active. Returns whether the health check should start.
    mutating func channelActive() -> Bool {
        guard case .initialized = state else { return false }
        state = .active
        return true
    }

    /// SUBSCRIBE/PSUBSCRIBE was sent: replies go to `sink` from now on. Returns false when the
    /// connection is ending (the sink is not installed).
    mutating func enterSubscriberMode(_ sink: PushSink) -> Bool {
        switch state {
        case .initialized, .active, .subscribed:
            state = .subscribed(sink)
            return true
        case .closing, .closed:
            return false
        }
    }

    /// The handler closes the connection with `error`.
    mutating func close(_ error: HiredisError) -> CloseAction {
        switch state {
        case .initialized, .active, .subscribed:
            state = .closing(error)
            return .failAllAndCloseChannel(error)
        case .closing, .closed:
            return .none
        }
    }

    /// The channel went inactive (the peer closed it, or our close completed), or the handler
    /// was removed; `error` says why when nothing else did first.
    mutating func channelClosed(_ error: HiredisError) -> CloseAction {
        switch state {
        case .initialized, .active, .subscribed:
            state = .closed(error)
            return .failAll(error)
        case .closing(let first):
            // Everything waiting was failed when closing began; failing again catches nothing
            // new but costs nothing, and keeps the first error.
            state = .closed(first)
            return .failAll(first)
        case .closed:
            return .none
        }
    }
}
