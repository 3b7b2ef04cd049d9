import HiredisNIO

/// Every Lua script of the session store, in one place.
///
/// Each script touches only the three keys of one session (one Redis Cluster slot), always in the
/// same order: KEYS[1] the data hash, KEYS[2] the alive timer, KEYS[3] the messages list. Times are
/// Unix milliseconds from the calling instance. A script that finds the session not alive writes
/// nothing; a script that rejects its input writes nothing either.
enum SessionScripts {
    /// Shared prelude: reading and sliding a session's expiry.
    ///
    /// The timer (`alive`) expires after the idle timeout, capped by the absolute deadline. The
    /// data keys expire `grace` after the timer, so that the expiry hook can still read them; they
    /// are pushed out only when their lead has shrunk below half the grace, so that most touches
    /// cost one PEXPIREAT instead of three.
    private static let prelude = """
        local DATA, ALIVE, MESSAGES = KEYS[1], KEYS[2], KEYS[3]

        -- The fields sliding needs (idle_ms, deadline_at, data_until), then the extra ones named;
        -- nil when the session has no data.
        local function load(...)
          local f = redis.call('HMGET', DATA, 'idle_ms', 'deadline_at', 'data_until', ...)
          if not f[1] then return nil end
          return f
        end

        -- A write made under a lock lease carries the lease's fencing token (ARGV[3]; '' when none);
        -- a token older than the newest issued for the session means the writer lost its lease.
        local function stale(token, newest)
          return token ~= '' and tonumber(token) < tonumber(newest or 0)
        end

        -- Moves the timer to min(now + idle, deadline) and, when needed, the data keys to the timer
        -- plus grace (appending data_until to `fields` for the caller's HSET). Returns the data keys'
        -- expiry, or false when the session is not alive: its timer is gone or its deadline passed.
        -- The timer's value is the last activity; SET XX never brings a missing timer back.
        local function slide(f, now, grace, fields)
          local idle, deadline, data_until = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
          local expires = math.min(now + idle, deadline)
          if expires <= now or not redis.call('SET', ALIVE, now, 'XX', 'PXAT', expires) then return false end
          if expires + grace / 2 > data_until then
            data_until = expires + grace
            redis.call('PEXPIREAT', DATA, data_until)
            redis.call('PEXPIREAT', MESSAGES, data_until)
            fields[#fields + 1] = 'data_until'
            fields[#fields + 1] = data_until
          end
          return data_until
        end

        """

    /// create: ARGV[1] now, ARGV[2] grace ms, ARGV[3] idle ms, ARGV[4] absolute deadline,
    /// ARGV[5] user, ARGV[6] mode name, ARGV[7] agent type ('' for none), ARGV[8] size in bytes,
    /// ARGV[9...] metadata field/value pairs (fields prefixed `meta:`).
    /// Returns the timer's expiry, or 0 when any key of that id exists already (never reuse an id).
    static let create = LuaScript(
        prelude + """
            if redis.call('EXISTS', DATA, ALIVE, MESSAGES) > 0 then return 0 end
            local now, grace, idle, deadline = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
            local expires = math.min(now + idle, deadline)
            local data_until = expires + grace
            local fields = {'user', ARGV[5], 'state', 'created', 'created_at', now, 'last_activity', now,
              'idle_ms', idle, 'deadline_at', deadline, 'mode', ARGV[6], 'message_count', 0, 'version', 1,
              'data_until', data_until, 'size_bytes', ARGV[8]}
            if ARGV[7] ~= '' then
              fields[#fields + 1] = 'agent_type'
              fields[#fields + 1] = ARGV[7]
            end
            for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
            redis.call('HSET', DATA, unpack(fields))
            redis.call('PEXPIREAT', DATA, data_until)
            redis.call('SET', ALIVE, now, 'PXAT', expires)
            return expires
            """)

    /// touch: ARGV[1] now, ARGV[2] grace ms, ARGV[3] `meaningful` or `heartbeat`.
    /// Meaningful activity slides the expiry and records the last activity; a heartbeat records
    /// last_seen only. Returns {idle ms, deadline, data_until} (what the store caches for the
    /// single-command touch, see ``TouchCache``), or 0 when the session is not alive.
    ///
    /// Hot, so it stands alone (no prelude: closures cost per call), passes Redis the strings it
    /// read rather than numbers (Lua formats numbers with sprintf), and does two commands in the
    /// common case: HMGET, and SET on the timer with XX, which at once checks that the session is
    /// alive, slides its expiry and records the last activity as the timer's value. The hash's
    /// last_activity and the data keys' TTL follow when the data keys' lead over the timer has
    /// shrunk below half the grace; readers take the newer of the two activities.
    static let touch = LuaScript(
        """
        local DATA, ALIVE, MESSAGES = KEYS[1], KEYS[2], KEYS[3]
        if ARGV[3] == 'heartbeat' then
          if redis.call('EXISTS', ALIVE) == 0 then return 0 end
          redis.call('HSET', DATA, 'last_seen', ARGV[1])
          return 1
        end
        local f = redis.call('HMGET', DATA, 'idle_ms', 'deadline_at', 'data_until', 'state')
        if not f[1] then return 0 end
        local now, idle, deadline = tonumber(ARGV[1]), tonumber(f[1]), tonumber(f[2])
        local expires, timer
        if now + idle <= deadline then
          expires = now + idle
          timer = redis.call('SET', ALIVE, ARGV[1], 'XX', 'PX', f[1])
        elseif now < deadline then
          expires = deadline
          timer = redis.call('SET', ALIVE, ARGV[1], 'XX', 'PXAT', f[2])
        end
        if not timer then return 0 end
        local grace = tonumber(ARGV[2])
        local data_until = f[3]
        if expires + grace / 2 > tonumber(data_until) then
          data_until = expires + grace
          redis.call('PEXPIREAT', DATA, data_until)
          redis.call('PEXPIREAT', MESSAGES, data_until)
          redis.call('HSET', DATA, 'data_until', data_until, 'last_activity', ARGV[1], 'state', 'active')
        elseif f[4] ~= 'active' then
          redis.call('HSET', DATA, 'last_activity', ARGV[1], 'state', 'active')
        end
        return {f[1], f[2], data_until}
        """)

    /// resume: ARGV[1] now, ARGV[2] grace ms, ARGV[3] user, ARGV[4] resume threshold ms, ARGV[5] the
    /// lifecycle event to publish on success ('' for none), ARGV[6] the events channel.
    /// Returns {inactive ms, HGETALL of the session}, or 0 when it is unknown, not alive, or
    /// another user's (then nothing is touched).
    static let resume = LuaScript(
        prelude + """
            local now = tonumber(ARGV[1])
            local f = load('user', 'last_activity')
            if not f or f[4] ~= ARGV[3] then return 0 end
            local fields = {'last_activity', now}
            if not slide(f, now, tonumber(ARGV[2]), fields) then return 0 end
            local inactive = now - tonumber(f[5])
            fields[#fields + 1] = 'state'
            fields[#fields + 1] = (inactive > tonumber(ARGV[4])) and 'resumed' or 'active'
            redis.call('HSET', DATA, unpack(fields))
            if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[6], ARGV[5]) end
            return {inactive, redis.call('HGETALL', DATA)}
            """)

    /// append_messages: ARGV[1] now, ARGV[2] grace ms, ARGV[3] fencing token ('' for none),
    /// ARGV[4] window, ARGV[5] max session bytes, ARGV[6...] the messages (`<role> <unix ms> <content>`).
    /// Appends, trims the list to the window, slides the expiry. Returns {1, list length},
    /// {0} when the session is not alive, {-1, size} when it would exceed the size limit, {-2} for a
    /// stale fencing token.
    static let appendMessages = LuaScript(
        prelude + """
            local now, grace, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5])
            local f = load('size_bytes', 'message_count', 'version', 'fence')
            if not f then return {0} end
            if stale(ARGV[3], f[7]) then return {-2} end
            local count = #ARGV - 5
            local size = tonumber(f[4])
            for i = 6, #ARGV do size = size + #ARGV[i] end
            if size > limit then return {-1, size} end
            local fields = {'last_activity', now, 'state', 'active',
              'message_count', tonumber(f[5]) + count, 'version', tonumber(f[6]) + 1}
            local data_until = slide(f, now, grace, fields)
            if not data_until then return {0} end
            local length = redis.call('RPUSH', MESSAGES, unpack(ARGV, 6))
            if length == count then redis.call('PEXPIREAT', MESSAGES, data_until) end
            if length > window then
              for _, message in ipairs(redis.call('LPOP', MESSAGES, length - window)) do size = size - #message end
              length = window
            end
            fields[#fields + 1] = 'size_bytes'
            fields[#fields + 1] = size
            redis.call('HSET', DATA, unpack(fields))
            return {1, length}
            """)

    /// clear_messages: ARGV[1] now, ARGV[2] grace ms, ARGV[3] fencing token ('' for none).
    /// Empties the messages; metadata stays. Returns 1, 0 when the session is not alive, -2 for a
    /// stale fencing token.
    static let clearMessages = LuaScript(
        prelude + """
            local now = tonumber(ARGV[1])
            local f = load('size_bytes', 'version', 'fence')
            if not f then return 0 end
            if stale(ARGV[3], f[6]) then return -2 end
            local fields = {'last_activity', now, 'message_count', 0, 'version', tonumber(f[5]) + 1}
            if not slide(f, now, tonumber(ARGV[2]), fields) then return 0 end
            local size = tonumber(f[4])
            for _, message in ipairs(redis.call('LRANGE', MESSAGES, 0, -1)) do size = size - #message end
            redis.call('DEL', MESSAGES)
            fields[#fields + 1] = 'size_bytes'
            fields[#fields + 1] = size
            redis.call('HSET', DATA, unpack(fields))
            return 1
            """)

    /// set_metadata: ARGV[1] now, ARGV[2] grace ms, ARGV[3] fencing token ('' for none), ARGV[4] max
    /// session bytes, ARGV[5] new idle ms ('' to keep), ARGV[6] new mode name ('' to keep),
    /// ARGV[7...] field/value pairs to write (fields prefixed `meta:`; an empty value removes the field).
    /// Writes only those fields. Returns {1, version}, {0} when not alive, {-1, size} when too large,
    /// {-2} for a stale fencing token.
    static let setMetadata = LuaScript(
        prelude + """
            local now, grace, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
            local f = load('size_bytes', 'version', 'fence')
            if not f then return {0} end
            if stale(ARGV[3], f[6]) then return {-2} end
            local size = tonumber(f[4])
            for i = 7, #ARGV, 2 do size = size - redis.call('HSTRLEN', DATA, ARGV[i]) + #ARGV[i + 1] end
            if size > limit then return {-1, size} end
            local version = tonumber(f[5]) + 1
            local fields = {'last_activity', now, 'size_bytes', size, 'version', version}
            if ARGV[5] ~= '' then
              f[1] = ARGV[5]
              fields[#fields + 1] = 'idle_ms'
              fields[#fields + 1] = ARGV[5]
              fields[#fields + 1] = 'mode'
              fields[#fields + 1] = ARGV[6]
            end
            if not slide(f, now, grace, fields) then return {0} end
            local removed = {}
            for i = 7, #ARGV, 2 do
              if ARGV[i + 1] == '' then
                removed[#removed + 1] = ARGV[i]
              else
                fields[#fields + 1] = ARGV[i]
                fields[#fields + 1] = ARGV[i + 1]
              end
            end
            redis.call('HSET', DATA, unpack(fields))
            if #removed > 0 then redis.call('HDEL', DATA, unpack(removed)) end
            return {1, version}
            """)

    /// take: removes the session and returns what it held, for `rotate` (ARGV: none).
    /// Returns {timer PTTL, HGETALL, LRANGE of the messages}, or 0 when it is not alive.
    static let take = LuaScript(
        prelude + """
            local ttl = redis.call('PTTL', ALIVE)
            if ttl <= 0 then return 0 end
            local data = redis.call('HGETALL', DATA)
            local messages = redis.call('LRANGE', MESSAGES, 0, -1)
            redis.call('DEL', DATA, ALIVE, MESSAGES)
            return {ttl, data, messages}
            """)

    /// place: writes a taken session under a new id, for `rotate`. ARGV[1] now, ARGV[2] timer TTL
    /// ms, ARGV[3] grace ms, ARGV[4] number of hash field/value pairs, then the pairs, then the
    /// messages. Returns 1, or 0 when any key of the new id exists.
    static let place = LuaScript(
        prelude + """
            if redis.call('EXISTS', DATA, ALIVE, MESSAGES) > 0 then return 0 end
            local now, ttl, grace, npairs = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
            local data_until = now + ttl + grace
            local fields = {}
            for i = 5, 4 + npairs * 2, 2 do
              fields[#fields + 1] = ARGV[i]
              fields[#fields + 1] = ARGV[i + 1]
            end
            fields[#fields + 1] = 'data_until'
            fields[#fields + 1] = data_until
            redis.call('HSET', DATA, unpack(fields))
            redis.call('PEXPIREAT', DATA, data_until)
            if #ARGV > 4 + npairs * 2 then
              redis.call('RPUSH', MESSAGES, unpack(ARGV, 5 + npairs * 2))
              redis.call('PEXPIREAT', MESSAGES, data_until)
            end
            redis.call('SET', ALIVE, now, 'PX', ttl)
            return 1
            """)

    /// delete: removes every key of the session (ARGV: none).
    /// Returns {user, created_at}, or 0 when there was no session data.
    static let delete = LuaScript(
        prelude + """
            local f = redis.call('HMGET', DATA, 'user', 'created_at')
            local removed = redis.call('DEL', DATA, ALIVE, MESSAGES)
            if removed == 0 or not f[1] then return 0 end
            return {f[1], f[2]}
            """)

    // MARK: Expiry (KEYS[4] is the session's claim key)

    /// check: what a due session needs. ARGV[1] now, ARGV[2] claim token, ARGV[3] claim lease ms,
    /// ARGV[4] warning lead ms (0: no warnings), ARGV[5] grace ms.
    /// Returns one of:
    /// - {'alive', timer PTTL, warned}: still alive, the hint was early (reschedule it); warned is 1
    ///   when the current period of activity was warned about already;
    /// - {'warn', timer PTTL, HGETALL}: alive and within the warning lead of its idle expiry, not
    ///   yet warned for this period of activity (the timer's value identifies it): warn once;
    /// - {'gone'}: nothing left (drop the hint);
    /// - {'busy', claim PTTL}: another instance holds the claim;
    /// - {'claimed', HGETALL, LRANGE, attempt}: this instance runs the hook; the data now outlives
    ///   the lease; attempt counts earlier claims (an instance died, or the hook kept throwing).
    /// Reading the timer makes Redis expire it if it is due (lazy expiry), which is what we want.
    static let check = LuaScript(
        """
        local DATA, ALIVE, MESSAGES, CLAIM = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
        local ttl = redis.call('PTTL', ALIVE)
        if ttl > 0 then
          local lead = tonumber(ARGV[4])
          if lead == 0 then return {'alive', ttl, 0} end
          local period = redis.call('GET', ALIVE)
          local f = redis.call('HMGET', DATA, 'warned_for', 'deadline_at')
          -- The warning is for idle expiry: a timer that ends at the absolute deadline gets none
          -- (no activity could save the session).
          local warned = f[1] == period or tonumber(ARGV[1]) + ttl >= tonumber(f[2] or 0) - 10
          if ttl <= lead and not warned then
            redis.call('HSET', DATA, 'warned_for', period)
            return {'warn', ttl, redis.call('HGETALL', DATA)}
          end
          return {'alive', ttl, warned and 1 or 0}
        end
        if redis.call('EXISTS', DATA) == 0 then return {'gone'} end
        if not redis.call('SET', CLAIM, ARGV[2], 'NX', 'PX', ARGV[3]) then
          return {'busy', redis.call('PTTL', CLAIM)}
        end
        local keep = tonumber(ARGV[1]) + tonumber(ARGV[3]) + tonumber(ARGV[5])
        redis.call('PEXPIREAT', DATA, keep)
        redis.call('PEXPIREAT', MESSAGES, keep)
        local attempt = redis.call('HINCRBY', DATA, 'cleanup_attempts', 1) - 1
        return {'claimed', redis.call('HGETALL', DATA), redis.call('LRANGE', MESSAGES, 0, -1), attempt}
        """)

    /// finalize: after the hook, removes the session if this instance still holds the claim.
    /// ARGV[1] claim token. Returns 1, or 0 when the claim was lost (the lease ran out).
    static let finalize = LuaScript(
        """
        if redis.call('GET', KEYS[4]) ~= ARGV[1] then return 0 end
        redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
        return 1
        """)

    /// retire: ends a session at once but keeps its data for the cleanup hook (delete with hooks).
    /// ARGV[1] grace ms. Returns {user, created_at}, or 0 when there is no session.
    static let retire = LuaScript(
        prelude + """
            local f = redis.call('HMGET', DATA, 'user', 'created_at')
            if not f[1] then return 0 end
            redis.call('DEL', ALIVE)
            redis.call('HSET', DATA, 'state', 'deleted')
            redis.call('PEXPIRE', DATA, ARGV[1])
            redis.call('PEXPIRE', MESSAGES, ARGV[1])
            return {f[1], f[2]}
            """)

    /// take_due: hands the due entries of one index (deadlines or warnings) to one sweeper.
    /// KEYS[1] the index; ARGV[1] now, ARGV[2] the most to take, ARGV[3] lease ms.
    /// Returns the ids due (oldest first) and moves them a lease ahead, so that other sweepers do
    /// not take them meanwhile; a sweeper that dies leaves them to come back after the lease.
    /// (One key: fine for Redis Cluster.)
    static let takeDue = LuaScript(
        """
        local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
        if #due > 0 then
          local later = tonumber(ARGV[1]) + tonumber(ARGV[3])
          local entries = {}
          for _, id in ipairs(due) do
            entries[#entries + 1] = later
            entries[#entries + 1] = id
          end
          redis.call('ZADD', KEYS[1], unpack(entries))
        end
        return due
        """)

    // MARK: Locks (KEYS: data hash, alive timer, lock, waiter queue, waiter heartbeats)

    /// lock_acquire: ARGV[1] owner token, ARGV[2] lease ms, ARGV[3] ms after which a waiter that
    /// stopped asking is skipped, ARGV[4] `wait`, `try` or `takeover`.
    /// Returns {1, fencing token} when granted (the fence grows with every acquisition), {0, holder's
    /// lease left in ms} when not (a `wait` caller is queued by arrival, Redis's clock), {-1} when
    /// the session is not alive. The lock is granted when it is free and nobody is queued ahead.
    static let lockAcquire = LuaScript(
        """
        local DATA, ALIVE, LOCK, QUEUE, SEEN = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
        local token, mode = ARGV[1], ARGV[4]
        if redis.call('EXISTS', ALIVE) == 0 then return {-1} end
        if mode == 'takeover' then
          redis.call('SET', LOCK, token, 'PX', ARGV[2])
          redis.call('ZREM', QUEUE, token)
          redis.call('HDEL', SEEN, token)
          return {1, redis.call('HINCRBY', DATA, 'fence', 1)}
        end
        -- Uncontended: nobody queued, the lock free.
        if redis.call('EXISTS', QUEUE) == 0 then
          if redis.call('SET', LOCK, token, 'NX', 'PX', ARGV[2]) then
            return {1, redis.call('HINCRBY', DATA, 'fence', 1)}
          end
          if redis.call('GET', LOCK) == token then return {1, tonumber(redis.call('HGET', DATA, 'fence'))} end
        end
        local clock = redis.call('TIME')
        local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
        local holder = redis.call('GET', LOCK)
        if holder == token then return {1, tonumber(redis.call('HGET', DATA, 'fence'))} end
        if not holder then
          -- Skip queued waiters that stopped asking (their process died).
          local head = redis.call('ZRANGE', QUEUE, 0, 0)[1]
          while head and head ~= token and now - tonumber(redis.call('HGET', SEEN, head) or 0) > tonumber(ARGV[3]) do
            redis.call('ZREM', QUEUE, head)
            redis.call('HDEL', SEEN, head)
            head = redis.call('ZRANGE', QUEUE, 0, 0)[1]
          end
          if not head or head == token then
            redis.call('SET', LOCK, token, 'PX', ARGV[2])
            if head then
              redis.call('ZREM', QUEUE, token)
              redis.call('HDEL', SEEN, token)
            end
            return {1, redis.call('HINCRBY', DATA, 'fence', 1)}
          end
        end
        if mode == 'wait' then
          redis.call('ZADD', QUEUE, 'NX', now, token)
          redis.call('HSET', SEEN, token, now)
          local keep = tonumber(ARGV[3]) * 4 + tonumber(ARGV[2])
          redis.call('PEXPIRE', QUEUE, keep)
          redis.call('PEXPIRE', SEEN, keep)
        end
        return {0, redis.call('PTTL', LOCK)}
        """)

    /// lock_release: ARGV[1] owner token, ARGV[2] wake-up channel. Releases the lock if the caller
    /// owns it and wakes the next waiter (PUBLISH its token). Returns 1, or 0 when the caller is not
    /// the owner (nothing changes: safe to retry).
    static let lockRelease = LuaScript(
        """
        if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
        redis.call('DEL', KEYS[3])
        local head = redis.call('ZRANGE', KEYS[4], 0, 0)[1]
        if head then redis.call('PUBLISH', ARGV[2], head) end
        return 1
        """)

    /// lock_extend: ARGV[1] owner token, ARGV[2] lease ms. Extends the lease if the caller owns the
    /// lock. Returns 1, or 0 when it does not (the lease ran out, or another holder took over).
    static let lockExtend = LuaScript(
        """
        if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
        redis.call('PEXPIRE', KEYS[3], ARGV[2])
        return 1
        """)

    /// lock_abandon: ARGV[1] waiter token. Leaves the queue (a waiter that timed out or was
    /// cancelled) and wakes the next waiter if the lock is free.
    static let lockAbandon = LuaScript(
        """
        redis.call('ZREM', KEYS[4], ARGV[1])
        redis.call('HDEL', KEYS[5], ARGV[1])
        if redis.call('EXISTS', KEYS[3]) == 0 then
          local head = redis.call('ZRANGE', KEYS[4], 0, 0)[1]
          if head then redis.call('PUBLISH', ARGV[2], head) end
        end
        return 1
        """)
}
