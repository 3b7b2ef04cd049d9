#if Vapor
    import SessionCache
    import Vapor

    /// A user's device list can be returned from a route as it is (`[DeviceSession]`).
    extension DeviceSession: Content {}
#endif  // Vapor
