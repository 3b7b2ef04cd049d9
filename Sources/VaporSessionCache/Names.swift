#if Vapor
    import SessionCache

    // Vapor declares `Session`, `SessionData` and a class `SessionCache`, so in a file that imports
    // Vapor the store's `Session` is ambiguous and cannot be qualified (`SessionCache.Session` finds
    // Vapor's class). These names, declared where Vapor is not imported, are unambiguous everywhere.

    /// The store's session (`SessionCache.Session`) under a name that Vapor does not use.
    public typealias StoredSession = Session
#endif  // Vapor
