import Foundation

extension Session {
    /// The `Max-Age` of the session's cookie, for the integrations: the seconds from its last
    /// activity to its absolute deadline, both Redis's times (never the app server's clock), at
    /// least 1. Such a cookie dies at the absolute deadline: never before the session, and never
    /// long after one that stays in use.
    package var cookieMaxAge: Int {
        max(1, Int(absoluteDeadline.timeIntervalSince(lastActivity).rounded(.down)))
    }
}
