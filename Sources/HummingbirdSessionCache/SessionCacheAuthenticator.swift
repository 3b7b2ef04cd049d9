#if Hummingbird
    import Hummingbird
    import HummingbirdAuth

    /// HummingbirdAuth's authentication from the session's user: puts the user of the request's
    /// session (``WebSession/user``) into `context.identity`, through a HummingbirdAuth
    /// `UserSessionRepository` as `SessionAuthenticator` does, so that `IsAuthenticatedMiddleware`,
    /// `context.requireIdentity()` and authorization policies work as with HummingbirdAuth's own
    /// sessions. Add it after ``SessionCacheMiddleware``.
    ///
    /// ```swift
    /// struct AppContext: SessionCacheRequestContext, AuthRequestContext {
    ///     var coreContext: CoreRequestContextStorage
    ///     var identity: User?
    ///     let session = WebSession()
    ///     init(source: ApplicationRequestContextSource) { coreContext = .init(source: source) }
    /// }
    /// router.add(middleware: SessionCacheMiddleware(store: store))
    /// router.add(middleware: SessionCacheAuthenticator(context: AppContext.self) { user, _ in try await users.find(user) })
    /// router.get("/me") { _, context in try context.requireIdentity().name }
    /// ```
    public struct SessionCacheAuthenticator<
        Context: SessionCacheRequestContext & AuthRequestContext,
        Repository: UserSessionRepository<String, Context.Identity>
    >: AuthenticatorMiddleware {
        public typealias Identity = Context.Identity

        /// Where the session's user becomes an identity.
        public let users: Repository

        /// Identities from `users`, given the session's user.
        public init(users: Repository, context: Context.Type = Context.self) {
            self.users = users
        }

        /// Identities from `getUser`, given the session's user.
        public init(
            context: Context.Type = Context.self,
            getUser: @escaping @Sendable (String, UserRepositoryContext) async throws -> Context.Identity?
        ) where Repository == UserSessionClosureRepository<String, Context.Identity> {
            self.users = UserSessionClosureRepository(getUser)
        }

        /// The session's user as an identity; nil without a session or for an anonymous one.
        public func authenticate(request: Request, context: Context) async throws -> Context.Identity? {
            guard let user = context.session.user else { return nil }
            return try await users.getUser(from: user, context: UserRepositoryContext(logger: context.logger))
        }
    }
#endif  // Hummingbird
