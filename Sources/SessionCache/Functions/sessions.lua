#!lua name=session_cache_v3
-- revision: 1
--
-- (Compatible changes raise the revision; app servers replace an older one in place. 0.1.0's
-- source has none: revision 0. 1: devices, end_device, set_device; writes wait out migrations.)
--
-- The session store's server-side functions: a Redis Functions library (Redis >= 7.0), loaded by
-- SessionStore with FUNCTION LOAD and replicated with the data. `redis-cli FUNCTION LIST` shows it.
-- Swift calls each function through a typed wrapper (SessionFunction.swift and the *Functions.swift
-- files beside it); the DocC article KeysInRedis.md shows the layout with redis-cli examples.
--
-- Rules every function follows:
-- * One bucket, one slot. All keys of a bucket carry the hash tag {<bucket>}, so one call touches
--   one Redis Cluster slot. KEYS[1] names the key the call is about; the bucket's other keys are
--   derived from it below (they hash to the same slot).
-- * One clock. Every time that decides expiry, deadlines, ordering or "inactive for" comes from
--   this server's TIME (milliseconds since the epoch). App servers never send a timestamp.
-- * All or nothing. A call that refuses its input, or finds the session not alive, writes nothing.
--   A call that writes answers TRYAGAIN, having changed nothing, while its slot migrates (see
--   unless_migrating below): Redis would stop it at the first key that is not on the node and
--   keep what it wrote before.
-- * Replies about one session or lock start with a status word: an array whose first element it
--   is, or the word alone when there is nothing else to say (the lock's release, extend and
--   abandon: a string costs Redis less than a table). Swift decodes it in one place
--   (FunctionStatus). The listener's and the operator's calls (stats,
--   claim, renew, finalize, listeners, partner) reply with data, described at each.
--
-- Layout (namespace ns, bucket b, session id ID):
--   ns:{b}:session:ID                     hash    the session (fields below)
--   ns:{b}:session:ID:messages            list    recent messages, '<role> <ms> <content>'
--   ns:{b}:session:ID:timer:IDLE:DEADLINE string  the idle timer: it exists while the session is
--                                                 alive and its TTL is the session's; its value is
--                                                 the last heartbeat (ms, 0 for none). Its name
--                                                 carries the idle timeout and absolute deadline
--                                                 (ms), so a touch needs no read, and a touch with
--                                                 outdated timing finds no key (a mode change
--                                                 renames the timer).
--   ns:{b}:session:ID:lock[:TAB]          string  lock holder's token (TTL: the lease), plus ' q'
--                                                 while waiters queue
--   ns:{b}:session:ID:lock[:TAB]:queue    zset    waiting tokens by arrival
--   ns:{b}:session:ID:lock[:TAB]:seen     hash    token -> when that waiter last asked (ms)
--   ns:{b}:session:ID:bound               string  a bound anonymous session's new id (for a minute
--                                                 after bind_finish: late binds converge on it)
--   ns:{b}:session:ID:placed              string  the old id a bind placed this session from (for
--                                                 a minute: a late place never re-creates it)
--   ns:{b}:deadlines                      zset    'ID:IDLE:DEADLINE' -> earliest possible end (ms):
--                                                 a hint the expiry listener visits (listener
--                                                 mode only); the member names the timer
--   ns:{b}:warnings                       zset    ID -> when its expiry warning is due (ms)
--   ns:{b}:claims                         zset    ID -> end of the claim lease (ms)
--   ns:{b}:claim-owners                   hash    ID -> '<owner token> <claims before>' 
--   ns:{b}:user:USER                      zset    USER's session ids -> last write (ms)
--   ns:{b}:users                          hash    USER -> number of indexed sessions
--   ns:{c}:imported:FORMER                string  the id of a session imported under another system's
--                                                 id FORMER ({c}: crc16(FORMER)); 'spent:ID:MS' once
--                                                 handed out (import_redeem)
--   ns:{b}:stats                          hash    created, ended, ended_lifetime_ms
--   ns:{b}:lock-wakeups                   sharded pub/sub channel: a release names the next waiter
--   ns:{listeners}                        zset    expiry listener token -> registration end (ms)

-- Fields of the session hash.
local F = {
  user = 'user', state = 'state', created_at = 'created_at', last_activity = 'last_activity',
  idle = 'idle_ms', deadline = 'deadline_at', mode = 'mode', message_count = 'message_count',
  agent_type = 'agent_type', version = 'version', size = 'size_bytes', meta_count = 'meta_count',
  data_until = 'data_until', listener = 'listener', grace = 'grace_ms', warned_for = 'warned_for',
  binding_to = 'binding_to', binding_until = 'binding_until', bound_from = 'bound_from',
  fence = 'fence', device = 'device',
}

-- A number as the digits of its integer part: for every number that goes into a key or member
-- name. Lua's `..` writes numbers from 1e14 on as '2.0179651171785e+14' while HSET stores the
-- digits, so a timer named with `..` could never be found again from the hash.
local function int(n) return string.format('%d', tonumber(n)) end

-- Key names, derived from a key of the bucket.
local K = {}
function K.bucket(key) return string.match(key, '^(.-{[^}]*}:)') end
function K.id(session) return string.match(session, ':session:([^:]+)$') end
function K.session(bucket, id) return bucket .. 'session:' .. id end
function K.messages(session) return session .. ':messages' end
function K.bound(session) return session .. ':bound' end
function K.placed(session) return session .. ':placed' end
function K.timer(session, idle, deadline) return session .. ':timer:' .. int(idle) .. ':' .. int(deadline) end
function K.lock(session, tab)
  if tab == nil or tab == '' then return session .. ':lock' end
  return session .. ':lock:' .. tab
end
function K.deadlines(bucket) return bucket .. 'deadlines' end
-- A session's member in `deadlines`: its id and its timer's timing, so that a visit knows every due
-- session's timer without reading the session.
function K.entry(id, idle, deadline) return id .. ':' .. int(idle) .. ':' .. int(deadline) end
function K.warnings(bucket) return bucket .. 'warnings' end
function K.claims(bucket) return bucket .. 'claims' end
function K.owners(bucket) return bucket .. 'claim-owners' end
function K.user(bucket, user) return bucket .. 'user:' .. user end
function K.users(bucket) return bucket .. 'users' end
function K.stats(bucket) return bucket .. 'stats' end
function K.wakeups(bucket) return bucket .. 'lock-wakeups' end

-- How long bind's markers (`:bound`, `:placed`) outlive their step: longer than a bind's mark
-- (SessionStore: 30 s), so a late or retried step of the same bind still finds them.
local BIND_MARKER_MS = 60000

-- Stats are kept this long after their last change.
local STATS_LIFETIME = 30 * 24 * 3600 * 1000

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- HSET of any number of field/value pairs: unpack() has a stack limit, so in chunks.
local function hset_pairs(key, pairs)
  local i = 1
  while i <= #pairs do
    local last = math.min(i + 199, #pairs)
    redis.call('HSET', key, unpack(pairs, i, last))
    i = last + 1
  end
end

-- RPUSH of any number of elements, in chunks. Returns the list's length.
local function rpush_all(key, items, first)
  local length = 0
  local i = first or 1
  while i <= #items do
    local last = math.min(i + 199, #items)
    length = redis.call('RPUSH', key, unpack(items, i, last))
    i = last + 1
  end
  return length
end

-- The HGETALL reply of a hash, or an empty table.
local function hgetall(key) return redis.call('HGETALL', key) end

-- Publishes a lifecycle event. The id is shortened to its first 9 characters (3 of bucket, 6
-- random): enough to correlate, far too few to use.
local function publish_event(channel, now, kind, id, user, detail)
  if channel == '' then return end
  local text = '{"at":' .. now .. ',"event":"' .. kind .. '","session":"' .. string.sub(id, 1, 9) .. '"'
  if detail and detail ~= '' then text = text .. ',"detail":"' .. detail .. '"' end
  redis.call('PUBLISH', channel, text .. ',"user":' .. cjson.encode(user or '') .. '}')
end

-- Every key has a TTL: a bucket-wide key lives `lifetime` past its last write (longer than any
-- session in it). Never shortened: a session of a short mode must not cut the index below what a
-- longer one in it needs (a plain PEXPIRE did).
local function keep(key, lifetime)
  -- GT moves a TTL only later (one call, the usual case); a key without a TTL counts as endless
  -- for GT, so NX gives it one.
  if redis.call('PEXPIRE', key, lifetime, 'GT') == 0 then redis.call('PEXPIRE', key, lifetime, 'NX') end
end

-- The timing of a session if it is alive at `now`: its fields (idle, deadline, state, then
-- `extra` ones), its timer key and the ms it has left; nil when it has no data, its timer is gone,
-- or its absolute deadline has passed (a touch's plain PEXPIRE run after a long Redis stall may
-- have kept the timer a little longer: it does not count).
local function alive(session, now, ...)
  local f = redis.call('HMGET', session, F.idle, F.deadline, F.state, ...)
  if not f[1] or f[3] == 'deleted' or now >= tonumber(f[2]) then return nil end
  local timer = K.timer(session, f[1], f[2])
  local left = redis.call('PTTL', timer)
  if left <= 0 then return nil end
  return f, timer, left
end

-- Slides the timer to min(now + idle, deadline): PEXPIRE never revives a missing key, LT never
-- passes the deadline. Returns false when the timer is gone.
local function slide(timer, idle, deadline)
  if redis.call('PEXPIRE', timer, idle) == 0 then return false end
  redis.call('PEXPIREAT', timer, deadline, 'LT')
  return true
end

-- Without an expiry listener, data keys expire `grace` after the timer and are pushed out when
-- their lead has shrunk below half of it. (With a listener they live until the deadline plus
-- the safety TTL, and finalize removes them: no refresh needed.) Returns the new data_until, or
-- nil when nothing changed.
local function refresh_data(session, now, idle, deadline, listener, grace, data_until)
  if listener == '1' then return nil end
  local expires = math.min(now + tonumber(idle), tonumber(deadline))
  grace = tonumber(grace)
  if expires + grace / 2 <= tonumber(data_until) then return nil end
  local until_ = expires + grace
  redis.call('PEXPIREAT', session, until_)
  redis.call('PEXPIREAT', K.messages(session), until_)
  return until_
end

-- refresh_data, with the new data_until (if any) added to the `fields` about to be written.
local function refresh_data_into(fields, session, now, idle, deadline, listener, grace, data_until)
  local until_ = refresh_data(session, now, idle, deadline, listener, grace, data_until)
  if until_ then
    fields[#fields + 1] = F.data_until
    fields[#fields + 1] = until_
  end
end

-- The last activity as far as the server can tell: the later of the recorded one and the one the
-- timer's TTL implies (exact unless the deadline capped the timer).
local function last_activity(recorded, now, left, idle)
  return math.max(tonumber(recorded or 0), now + left - tonumber(idle))
end

-- Whether a write made under a lease may go ahead: the caller must still hold the lock.
local function holds_lock(session, token, tab)
  if token == '' then return true end
  local holder = redis.call('GET', K.lock(session, tab))
  return holder ~= false and (holder == token or holder == token .. ' q')
end

-- Whether a bind of this anonymous session is under way (bind_begin marked it less than the
-- mark's lifetime ago): its writes are refused ('binding'), since the copy is made already and
-- bind_finish would drop them.
local function binding(session, now)
  local until_ = redis.call('HGET', session, F.binding_until)
  return until_ ~= false and tonumber(until_) > now
end

-- Removes a session from its user's index; keeps the per-bucket user count in step.
local function unlist(bucket, id, user)
  if user == nil or user == false or user == '' then return end
  if redis.call('ZREM', K.user(bucket, user), id) == 1 then
    if redis.call('HINCRBY', K.users(bucket), user, -1) <= 0 then redis.call('HDEL', K.users(bucket), user) end
  end
end

-- Removes every key and index entry of a session.
local function remove_session(bucket, id, session, f_idle, f_deadline, user)
  redis.call('DEL', session, K.messages(session))
  if f_idle then
    redis.call('DEL', K.timer(session, f_idle, f_deadline))
    redis.call('ZREM', K.deadlines(bucket), K.entry(id, f_idle, f_deadline))
  end
  redis.call('ZREM', K.warnings(bucket), id)
  redis.call('ZREM', K.claims(bucket), id)
  redis.call('HDEL', K.owners(bucket), id)
  unlist(bucket, id, user)
end

local function count_ended(bucket, now, created_at)
  local stats = K.stats(bucket)
  redis.call('HINCRBY', stats, 'ended', 1)
  redis.call('HINCRBY', stats, 'ended_lifetime_ms', math.max(0, now - tonumber(created_at or now)))
  redis.call('PEXPIRE', stats, STATS_LIFETIME)
end

-- Schedules the session in the expiry listener's indexes (listener mode only).
local function schedule(bucket, id, idle, expires, deadline, lead, lifetime)
  redis.call('ZADD', K.deadlines(bucket), 'LT', expires, K.entry(id, idle, deadline))
  keep(K.deadlines(bucket), lifetime)
  lead = tonumber(lead)
  if lead > 0 and expires < tonumber(deadline) then
    redis.call('ZADD', K.warnings(bucket), 'LT', expires - lead, id)
    keep(K.warnings(bucket), lifetime)
  end
end

------------------------------------------------------------------------------------------------
-- delete: ends a session now (delete_one is also what delete_user and the per-user cap use).
-- KEYS[1] the session hash. ARGV: [1] events channel [2] lifetime of the bucket's index keys ms
-- With an expiry listener, the session is retired: its timer goes, its data stays for the cleanup
-- hook (reason: deleted) and it is due at once. Without, every key goes now.
-- Reply: {'ok'} | {'not_found'} (unknown, or ended already: an ended session awaiting its hook
--   stays as it is)
local function delete_one(session, now, channel, lifetime)
  local f = redis.call('HMGET', session, F.user, F.created_at, F.idle, F.deadline, F.state, F.listener)
  if not f[1] or f[5] == 'deleted' then return false end
  local bucket, id = K.bucket(session), K.id(session)
  local was_alive = redis.call('DEL', K.timer(session, f[3], f[4])) == 1
  if f[6] == '1' then
    if not was_alive then return false end
    redis.call('HSET', session, F.state, 'deleted', F.last_activity, now)
    redis.call('ZADD', K.deadlines(bucket), now, K.entry(id, f[3], f[4]))
    keep(K.deadlines(bucket), lifetime)
    redis.call('ZREM', K.warnings(bucket), id)
    unlist(bucket, id, f[1])
  else
    remove_session(bucket, id, session, f[3], f[4], f[1])
    if not was_alive then return false end
    count_ended(bucket, now, f[2])
  end
  publish_event(channel, now, 'deleted', id, f[1])
  return true
end

-- Removes from a user's index up to `budget` of its oldest entries whose sessions ended by
-- themselves: without a listener their data goes too (nobody else would remove it); with one, an
-- ended session awaiting its hook stays listed until finalize, and only entries whose session has
-- no data left go. Stops at the first live entry. Returns how many went.
local function prune_index(bucket, index, user, now, budget)
  local pruned = 0
  for _, id in ipairs(redis.call('ZRANGE', index, 0, budget - 1)) do
    local session = K.session(bucket, id)
    local kind = redis.call('TYPE', session).ok
    -- A key overwritten by hand with another type is left for an operator to see.
    if kind ~= 'hash' and kind ~= 'none' then break end
    if kind == 'hash' and alive(session, now) then break end
    local f = redis.call('HMGET', session, F.idle, F.deadline, F.listener)
    if not f[1] then
      unlist(bucket, id, user)
    elseif f[3] ~= '1' then
      remove_session(bucket, id, session, f[1], f[2], user)
    else
      break
    end
    pruned = pruned + 1
  end
  return pruned
end

-- Lists session `id` in its user's index and prunes a few stale entries.
local function index_for_user(bucket, id, user, now, lifetime)
  local index = K.user(bucket, user)
  redis.call('ZADD', index, now, id)
  keep(index, lifetime)
  redis.call('HINCRBY', K.users(bucket), user, 1)
  keep(K.users(bucket), lifetime)
  prune_index(bucket, index, user, now, 4)
end

-- Ends the user's least recently written sessions past `cap` (0: no cap), never `id`, as deletes
-- (with a listener, their hooks run). At most a few entries per call (ended or stale ones count
-- too): a cap lowered below a user's count, or an index full of stale entries, takes effect call
-- by call. Returns how many ended.
local function enforce_cap(bucket, id, user, now, cap, events, lifetime)
  local index = K.user(bucket, user)
  local evicted, visits = 0, 0
  while cap > 0 and visits < 8 and redis.call('ZCARD', index) > cap do
    visits = visits + 1
    local oldest = redis.call('ZRANGE', index, 0, 0)[1]
    if oldest == id then break end
    if redis.call('TYPE', K.session(bucket, oldest)).ok ~= 'hash' then
      unlist(bucket, oldest, user)
    elseif delete_one(K.session(bucket, oldest), now, events, lifetime) then
      evicted = evicted + 1
    else
      unlist(bucket, oldest, user)
    end
  end
  return evicted
end

------------------------------------------------------------------------------------------------
-- create: a new session.
-- KEYS[1] the session hash.
-- ARGV: [1] user ('' for an anonymous session) [2] mode name [3] idle ms [4] absolute lifetime ms
--   [5] agent type ('' for none) [6] listener mode '1'/'0' [7] grace ms (listener: safety TTL
--   after the deadline; otherwise: after the timer) [8] warning lead ms (0: none) [9] lifetime of
--   the bucket's index keys ms [10] events channel ('' for none) [11] most sessions per user (0:
--   no cap) [12...] metadata field/value pairs (fields prefixed 'meta:')
-- Reply: {'ok', timer key, now, deadline, sessions ended by the cap} | {'exists'} (never reuse an id)
-- A user's index is pruned as it is met: the oldest entries of sessions that ended by themselves
-- go (a few per create, so that no call does much). Past the cap, the user's least recently
-- written sessions end (as a delete: with a listener, their hooks run).
local function create(keys, args)
  local session = keys[1]
  local bucket, id = K.bucket(session), K.id(session)
  if redis.call('EXISTS', session) == 1 then return {'exists'} end
  local now = now_ms()
  local user, idle = args[1], args[3]
  local deadline = now + tonumber(args[4])
  local expires = math.min(now + tonumber(idle), deadline)
  local listener, grace = args[6], tonumber(args[7])
  local data_until = (listener == '1' and deadline or expires) + grace
  local size = #args[5]
  local fields = {
    F.user, user, F.state, 'created', F.created_at, now, F.last_activity, now, F.idle, idle,
    F.deadline, deadline, F.mode, args[2], F.message_count, 0, F.version, 1, F.data_until, data_until,
    F.listener, listener, F.grace, args[7], F.meta_count, (#args - 11) / 2,
  }
  if args[5] ~= '' then
    fields[#fields + 1] = F.agent_type
    fields[#fields + 1] = args[5]
  end
  for i = 12, #args do
    fields[#fields + 1] = args[i]
    size = size + #args[i]
  end
  fields[#fields + 1] = F.size
  fields[#fields + 1] = size
  hset_pairs(session, fields)
  redis.call('PEXPIREAT', session, data_until)
  local timer = K.timer(session, idle, deadline)
  redis.call('SET', timer, 0, 'PXAT', expires)
  local lifetime = tonumber(args[9])
  if listener == '1' then schedule(bucket, id, idle, expires, deadline, args[8], lifetime) end
  local evicted = 0
  if user ~= '' then
    index_for_user(bucket, id, user, now, lifetime)
    evicted = enforce_cap(bucket, id, user, now, tonumber(args[11]), args[10], lifetime)
  end
  local stats = K.stats(bucket)
  redis.call('HINCRBY', stats, 'created', 1)
  redis.call('PEXPIRE', stats, STATS_LIFETIME)
  publish_event(args[10], now, 'created', id, user)
  return {'ok', timer, now, deadline, evicted}
end

------------------------------------------------------------------------------------------------
-- The fast touch is no function: when the caller knows the timer's name it sends
-- MULTI; PEXPIRE <timer> <idle>; PEXPIREAT <timer> <deadline> LT; EXEC
-- (the idle timeout and deadline from the timer's name): the same as slide() below.

-- touch: meaningful activity, slides the idle expiry. (A caller that knows the timer's name and
-- is far from the deadline sends a plain PEXPIRE <timer> <idle> instead: see SessionStore.touch.)
-- KEYS[1] the session hash. ARGV: none.
-- Reply: {'ok', timer key, now} | {'not_alive'}
local function touch(keys)
  local session = keys[1]
  local now = now_ms()
  local f, timer = alive(session, now, F.listener, F.grace, F.data_until)
  if not f then return {'not_alive'} end
  slide(timer, f[1], f[2])
  local fields = {}
  local until_ = refresh_data(session, now, f[1], f[2], f[4], f[5], f[6])
  if until_ then fields = {F.data_until, until_} end
  -- In the last idle period before the deadline the timer is capped at the deadline, and its TTL
  -- no longer tells when the activity was: record it, so that the hook's reason (absolute
  -- lifetime, not idle timeout) does not depend on a sweep visit in that period. (Touches there
  -- always come here: a plain PEXPIRE is sent only far from the deadline.)
  if now + tonumber(f[1]) >= tonumber(f[2]) then
    fields[#fields + 1] = F.last_activity
    fields[#fields + 1] = now
  end
  if #fields > 0 then redis.call('HSET', session, unpack(fields)) end
  return {'ok', timer, now}
end

-- heartbeat: liveness only (records the time as the timer's value; the expiry does not move).
-- KEYS[1] the session hash. Reply: {'ok'} | {'not_alive'}
local function heartbeat(keys)
  local now = now_ms()
  local f = redis.call('HMGET', keys[1], F.idle, F.deadline, F.state)
  if not f[1] or f[3] == 'deleted' or now >= tonumber(f[2]) then return {'not_alive'} end
  if not redis.call('SET', K.timer(keys[1], f[1], f[2]), now, 'XX', 'KEEPTTL') then return {'not_alive'} end
  return {'ok'}
end

------------------------------------------------------------------------------------------------
-- resume: picks a session up again, if alive and the caller's.
-- KEYS[1] the session hash.
-- ARGV: [1] user ('' for anonymous) [2] resume threshold ms [3] events channel [4] '1': whoever
--   its user is (the id alone is the credential, as a cookie is; the reply names the user)
-- Reply: {'ok', inactive ms, timer key, last heartbeat, now, HGETALL} | {'not_found'}
--   (unknown, ended, or another user's: nothing is touched)
local function resume(keys, args)
  local session = keys[1]
  local now = now_ms()
  local f, timer, left = alive(session, now, F.user, F.last_activity, F.listener, F.grace, F.data_until)
  if not f or (args[4] ~= '1' and f[4] ~= args[1]) then return {'not_found'} end
  local user = f[4]
  local la = last_activity(f[5], now, left, f[1])
  local inactive = math.max(0, now - la)
  slide(timer, f[1], f[2])
  local fields = {F.last_activity, now, F.state, (inactive > tonumber(args[2])) and 'resumed' or 'active'}
  refresh_data_into(fields, session, now, f[1], f[2], f[6], f[7], f[8])
  redis.call('HSET', session, unpack(fields))
  local bucket, id = K.bucket(session), K.id(session)
  if user ~= '' then redis.call('ZADD', K.user(bucket, user), 'XX', now, id) end
  publish_event(args[3], now, 'resumed', id, user)
  return {'ok', inactive, timer, redis.call('GET', timer) or '0', now, hgetall(session)}
end

-- get (read-only): the session as it is.
-- KEYS[1] the session hash.
-- Reply: {'ok', timer ms left, last heartbeat, now, HGETALL} | {'not_alive'}
local function get(keys)
  local now = now_ms()
  local f, timer, left = alive(keys[1], now)
  if not f then return {'not_alive'} end
  return {'ok', left, redis.call('GET', timer) or '0', now, hgetall(keys[1])}
end

-- recent_messages (read-only): the last ARGV[1] messages, oldest first.
-- KEYS[1] the session hash. Reply: {'ok', messages...} | {'not_alive'}
local function recent_messages(keys, args)
  if not alive(keys[1], now_ms()) then return {'not_alive'} end
  return {'ok', redis.call('LRANGE', K.messages(keys[1]), -tonumber(args[1]), -1)}
end

------------------------------------------------------------------------------------------------
-- append: appends messages, trims the window, checks the size limit after trimming.
-- KEYS[1] the session hash.
-- ARGV: [1] lease token ('' for none) [2] lock tab ('' for none) [3] window [4] max session bytes
--   [5...] role/content pairs; each is stored as '<role> <now ms> <content>'
-- Reply: {'ok', list length} | {'not_alive'} | {'too_large', size} | {'stale_lease'}
local function append(keys, args)
  local session = keys[1]
  local now = now_ms()
  local f, timer = alive(session, now, F.size, F.message_count, F.version, F.user, F.listener, F.grace, F.data_until)
  if not f then return {'not_alive'} end
  if not holds_lock(session, args[1], args[2]) then return {'stale_lease'} end
  if binding(session, now) then return {'binding'} end
  local window, limit = tonumber(args[3]), tonumber(args[4])
  local messages = K.messages(session)
  local lines = {}
  for i = 5, #args, 2 do lines[#lines + 1] = args[i] .. ' ' .. now .. ' ' .. args[i + 1] end
  local before = redis.call('LLEN', messages)
  local length = before
  -- What the window keeps: the newest `window` of the old and new messages together.
  local drop = math.max(0, length + #lines - window)
  local drop_old = math.min(drop, length)
  local first_new = 1 + (drop - drop_old)
  local size = tonumber(f[4])
  if drop_old > 0 then
    for _, line in ipairs(redis.call('LRANGE', messages, 0, drop_old - 1)) do size = size - #line end
  end
  for i = first_new, #lines do size = size + #lines[i] end
  if size > limit then return {'too_large', size} end
  if first_new <= #lines then length = rpush_all(messages, lines, first_new) end
  if drop_old > 0 then redis.call('LTRIM', messages, drop_old, -1) end
  length = length - drop_old
  slide(timer, f[1], f[2])
  if before == 0 then redis.call('PEXPIREAT', messages, tonumber(f[10])) end
  local fields = {F.last_activity, now, F.state, 'active', F.message_count, tonumber(f[5]) + #lines,
    F.version, tonumber(f[6]) + 1, F.size, size}
  refresh_data_into(fields, session, now, f[1], f[2], f[8], f[9], f[10])
  redis.call('HSET', session, unpack(fields))
  if f[7] ~= '' then redis.call('ZADD', K.user(K.bucket(session), f[7]), 'XX', now, K.id(session)) end
  return {'ok', length}
end

-- clear_messages: empties the messages; metadata stays.
-- KEYS[1] the session hash. ARGV: [1] lease token [2] lock tab.
-- Reply: {'ok'} | {'not_alive'} | {'stale_lease'}
local function clear_messages(keys, args)
  local session = keys[1]
  local now = now_ms()
  local f, timer = alive(session, now, F.size, F.version, F.listener, F.grace, F.data_until)
  if not f then return {'not_alive'} end
  if not holds_lock(session, args[1], args[2]) then return {'stale_lease'} end
  if binding(session, now) then return {'binding'} end
  local size = tonumber(f[4])
  for _, line in ipairs(redis.call('LRANGE', K.messages(session), 0, -1)) do size = size - #line end
  redis.call('DEL', K.messages(session))
  slide(timer, f[1], f[2])
  -- Meaningful activity: the data follows the timer (without a listener it would otherwise
  -- expire before the session does).
  local fields = {F.last_activity, now, F.message_count, 0, F.version, tonumber(f[5]) + 1, F.size, size}
  refresh_data_into(fields, session, now, f[1], f[2], f[6], f[7], f[8])
  redis.call('HSET', session, unpack(fields))
  return {'ok'}
end

------------------------------------------------------------------------------------------------
-- set_metadata: writes only the given metadata fields, optionally changes the timeout mode.
-- KEYS[1] the session hash.
-- ARGV: [1] lease token [2] lock tab [3] max session bytes [4] max metadata keys
--   [5] new mode name ('' to keep) [6] its idle ms [7] its absolute lifetime ms
--   [8] warning lead ms [9] lifetime of the bucket's index keys ms
--   [10...] field/value pairs (fields prefixed 'meta:'; an empty value removes the field)
-- Reply: {'ok', version, timer key ('' when the new mode ended the session), now} | {'not_alive'}
--   | {'too_large', size} | {'too_many_keys', count} | {'stale_lease'}
-- A mode change renames the timer (its name carries the timing), moves it to
-- min(now + idle, created + absolute lifetime), and pulls the index hints earlier if needed.
local function set_metadata(keys, args)
  local session = keys[1]
  local now = now_ms()
  local f, timer = alive(session, now, F.size, F.version, F.meta_count, F.created_at, F.listener, F.grace, F.user, F.data_until)
  if not f then return {'not_alive'} end
  if not holds_lock(session, args[1], args[2]) then return {'stale_lease'} end
  if binding(session, now) then return {'binding'} end
  local size, count = tonumber(f[4]), tonumber(f[6])
  local writes, removals = {}, {}
  for i = 10, #args, 2 do
    local field, value = args[i], args[i + 1]
    local old = redis.call('HSTRLEN', session, field)
    local exists = old > 0 or redis.call('HEXISTS', session, field) == 1
    if exists then size = size - #field - old end
    if value == '' then
      if exists then
        removals[#removals + 1] = field
        count = count - 1
      end
    else
      size = size + #field + #value
      if not exists then count = count + 1 end
      writes[#writes + 1] = field
      writes[#writes + 1] = value
    end
  end
  if count > tonumber(args[4]) then return {'too_many_keys', count} end
  if size > tonumber(args[3]) then return {'too_large', size} end
  local version = tonumber(f[5]) + 1
  local fields = {F.last_activity, now, F.state, 'active', F.version, version, F.size, size, F.meta_count, count}
  local bucket, id = K.bucket(session), K.id(session)
  if args[5] ~= '' then
    local idle = args[6]
    local deadline = tonumber(f[7]) + tonumber(args[7])
    local expires = math.min(now + tonumber(idle), deadline)
    fields[#fields + 1] = F.mode
    fields[#fields + 1] = args[5]
    fields[#fields + 1] = F.idle
    fields[#fields + 1] = idle
    fields[#fields + 1] = F.deadline
    fields[#fields + 1] = deadline
    if f[8] == '1' then redis.call('ZREM', K.deadlines(bucket), K.entry(id, f[1], f[2])) end
    if expires <= now then
      -- The new mode's absolute lifetime is over already: the session ends now.
      redis.call('DEL', timer)
      timer = ''
      if f[8] == '1' then
        redis.call('ZADD', K.deadlines(bucket), now, K.entry(id, idle, deadline))
        keep(K.deadlines(bucket), tonumber(args[9]))
      end
    else
      local renamed = K.timer(session, idle, deadline)
      if renamed ~= timer then redis.call('RENAME', timer, renamed) end
      timer = renamed
      redis.call('PEXPIREAT', timer, expires)
      local until_
      if f[8] == '1' then
        schedule(bucket, id, idle, expires, deadline, args[8], tonumber(args[9]))
        until_ = deadline + tonumber(f[9])
        redis.call('PEXPIREAT', session, until_)
        redis.call('PEXPIREAT', K.messages(session), until_)
      else
        until_ = refresh_data(session, now, idle, deadline, f[8], f[9], f[11])
      end
      if until_ then
        fields[#fields + 1] = F.data_until
        fields[#fields + 1] = until_
      end
    end
  else
    slide(timer, f[1], f[2])
    refresh_data_into(fields, session, now, f[1], f[2], f[8], f[9], f[11])
  end
  hset_pairs(session, fields)
  if #writes > 0 then hset_pairs(session, writes) end
  local i = 1
  while i <= #removals do
    local last = math.min(i + 199, #removals)
    redis.call('HDEL', session, unpack(removals, i, last))
    i = last + 1
  end
  if f[10] ~= '' then redis.call('ZADD', K.user(bucket, f[10]), 'XX', now, id) end
  return {'ok', version, timer, now}
end

------------------------------------------------------------------------------------------------
-- rotate: the session under a new id in the same bucket (against session fixation); the old id
-- is dead at once. One call: the keys are renamed, so any size moves in O(1).
-- KEYS[1] the session hash, KEYS[2] the new id's session hash (same bucket).
-- ARGV: [1] events channel
-- Reply: {'ok', new timer key, now, HGETALL} | {'not_alive'} | {'exists'}
local function rotate(keys, args)
  local old, new = keys[1], keys[2]
  local now = now_ms()
  local f, timer = alive(old, now, F.user)
  if not f then return {'not_alive'} end
  if binding(old, now) then return {'binding'} end
  if redis.call('EXISTS', new) == 1 then return {'exists'} end
  local bucket, old_id, new_id = K.bucket(old), K.id(old), K.id(new)
  redis.call('RENAME', old, new)
  if redis.call('EXISTS', K.messages(old)) == 1 then redis.call('RENAME', K.messages(old), K.messages(new)) end
  local new_timer = K.timer(new, f[1], f[2])
  redis.call('RENAME', timer, new_timer)
  local moves = {
    {K.deadlines(bucket), K.entry(old_id, f[1], f[2]), K.entry(new_id, f[1], f[2])},
    {K.warnings(bucket), old_id, new_id}, {K.user(bucket, f[4]), old_id, new_id},
  }
  for _, move in ipairs(moves) do
    local score = redis.call('ZSCORE', move[1], move[2])
    if score then
      redis.call('ZADD', move[1], score, move[3])  -- before the ZREM: the key must not vanish (its TTL)
      redis.call('ZREM', move[1], move[2])
    end
  end
  publish_event(args[1], now, 'rotated', old_id, f[4], string.sub(new_id, 1, 9))
  return {'ok', new_timer, now, hgetall(new)}
end

local function delete(keys, args)
  if delete_one(keys[1], now_ms(), args[1], tonumber(args[2])) then return {'ok'} end
  return {'not_found'}
end

-- delete_user: ends a user's sessions ("log out everywhere"), at most ARGV[3] per call so that no
-- call holds Redis long; the caller calls again while sessions remain. A session created while the
-- calls go on is ended by a later one, or created after the last (and then listed).
-- KEYS[1] the user's index. ARGV: [1] events channel [2] lifetime of the bucket's index keys ms
--   [3] most sessions to visit in this call [4] the user
-- Reply: {'ok', live sessions ended, entries left in the index}
-- Entries of sessions that ended already leave the index too (with a listener the hook still runs:
-- finalize does not need the entry).
local function delete_user(keys, args)
  local index = keys[1]
  local bucket = K.bucket(index)
  local now = now_ms()
  local count = 0
  for _, id in ipairs(redis.call('ZRANGE', index, 0, tonumber(args[3]) - 1)) do
    local kind = redis.call('TYPE', K.session(bucket, id)).ok
    -- (A key overwritten by hand with another type only leaves the index.)
    if kind == 'hash' and delete_one(K.session(bucket, id), now, args[1], tonumber(args[2])) then
      count = count + 1
    else
      unlist(bucket, id, args[4])
    end
  end
  return {'ok', count, redis.call('ZCARD', index)}
end

------------------------------------------------------------------------------------------------
-- A session's handle: names it in the user's list of devices so that it can be ended, without
-- being its id (a bearer secret). The id has 144 random bits: the handle does not give it back.
local function handle(id) return string.sub(redis.sha1hex(id), 1, 24) end

-- list (read-only): a user's live sessions, most recent write first, at most ARGV[1], among at
-- most ARGV[2] index entries (the cost of a call is bounded whatever the index holds).
-- KEYS[1] the user's index.
-- Reply: {'ok', now, {id, agent type, last activity, message count, state, last message}...}
-- devices (read-only): the same sessions, as a list of the user's devices.
-- Reply: {'ok', now, {id, last activity, created at, device label, handle}...}
local function list_sessions(keys, args, as_devices)
  local index = keys[1]
  local bucket = K.bucket(index)
  local limit = tonumber(args[1])
  local budget = tonumber(args[2])
  local now = now_ms()
  local out = {}
  local start = 0
  -- Entries of ended sessions are skipped (writes prune them, hooks remove them), so read in
  -- pages until `limit` live ones are found or the budget is spent.
  while #out < limit and start < budget do
    local ids = redis.call('ZREVRANGE', index, start, math.min(start + limit, budget) - 1)
    if #ids == 0 then break end
    start = start + #ids
    for _, id in ipairs(ids) do
      local session = K.session(bucket, id)
      local f, _, left
      if redis.call('TYPE', session).ok == 'hash' then
        f, _, left = alive(session, now, F.agent_type, F.last_activity, F.message_count, F.user, F.created_at, F.device)
      end
      if f and #out < limit then
        local state = f[3]
        local la = last_activity(f[5], now, left, f[1])
        if as_devices then
          out[#out + 1] = {id, la, f[8], f[9] or '', handle(id)}
        else
          if state == 'created' and la > tonumber(f[5]) then state = 'active' end
          out[#out + 1] = {id, f[4] or '', la, f[6], state, redis.call('LINDEX', K.messages(session), -1) or ''}
        end
      end
    end
  end
  return {'ok', now, out}
end

local function list(keys, args) return list_sessions(keys, args, false) end
local function devices(keys, args) return list_sessions(keys, args, true) end

-- end_device: ends the user's session that ARGV[3] is the handle of, among the newest ARGV[4]
-- entries of the user's index (a user's device list shows no more).
-- KEYS[1] the user's index. ARGV: [1] events channel [2] lifetime of the bucket's index keys ms
--   [3] the handle [4] most index entries to look at
-- Reply: {'ok', 1} when it ended a live session, else {'ok', 0}
local function end_device(keys, args)
  local index = keys[1]
  local bucket = K.bucket(index)
  for _, id in ipairs(redis.call('ZREVRANGE', index, 0, tonumber(args[4]) - 1)) do
    if handle(id) == args[3] then
      local session = K.session(bucket, id)
      if redis.call('TYPE', session).ok == 'hash' and delete_one(session, now_ms(), args[1], tonumber(args[2])) then
        return {'ok', 1}
      end
      return {'ok', 0}
    end
  end
  return {'ok', 0}
end

-- set_device: the label the application gives the session's device ('' removes it), shown in
-- the user's list of sessions.
-- KEYS[1] the session hash. ARGV[1] the label
-- Reply: {'ok'} | {'not_found'} | {'binding'}
local function set_device(keys, args)
  local now = now_ms()
  if not alive(keys[1], now) then return {'not_found'} end
  if binding(keys[1], now) then return {'binding'} end
  if args[1] == '' then
    redis.call('HDEL', keys[1], F.device)
  else
    redis.call('HSET', keys[1], F.device, args[1])
  end
  redis.call('HINCRBY', keys[1], F.version, 1)
  return {'ok'}
end

-- stats (read-only): one bucket's counters; readers sum the buckets.
-- KEYS[1] the bucket's stats hash.
-- Reply: {created, ended, ended lifetime ms, sessions (listed, scheduled or claimed), users}
local function stats(keys)
  local bucket = K.bucket(keys[1])
  local counters = redis.call('HMGET', keys[1], 'created', 'ended', 'ended_lifetime_ms')
  local sessions = redis.call('ZCARD', K.deadlines(bucket)) + redis.call('ZCARD', K.claims(bucket))
  local users = redis.call('HLEN', K.users(bucket))
  if sessions == 0 then
    -- Without an expiry listener nothing is scheduled: count the users' indexes instead.
    for _, value in ipairs(redis.call('HVALS', K.users(bucket))) do sessions = sessions + tonumber(value) end
  end
  return {tonumber(counters[1] or 0), tonumber(counters[2] or 0), tonumber(counters[3] or 0), sessions, users}
end

------------------------------------------------------------------------------------------------
-- Expiry (listener mode). A session is due when its deadlines entry is. An ended session is
-- claimed by one listener (`claims` holds the end of the claim's lease, `claim-owners` the owner
-- and how many claims came before), handed to its hook with its data, then finalized.
-- claim, renew and finalize take several buckets of one node at once (flag
-- allow-cross-slot-keys; a cluster node serves them all): the cost of a call is shared by every
-- session it handles, and each session costs a few reads plus its share of one command per
-- bucket for all of them.

-- Parses a claim-owners value '<owner> <claims before>'.
local function owner_of(value)
  if not value then return nil, 0 end
  local who, attempt = string.match(value, '^(%S+) (%d+)$')
  return who, tonumber(attempt or 0)
end

-- ZADD / ZREM / HSET / HDEL of many members in chunks (unpack() has a stack limit). `option`
-- (like 'XX') goes before the members, when given.
local function multi(command, key, items, option)
  local i = 1
  while i <= #items do
    local last = math.min(i + 199, #items)
    if option then
      redis.call(command, key, option, unpack(items, i, last))
    else
      redis.call(command, key, unpack(items, i, last))
    end
    i = last + 1
  end
end

-- DEL of many keys in chunks.
local function delete_keys(names)
  local i = 1
  while i <= #names do
    local last = math.min(i + 199, #names)
    redis.call('DEL', unpack(names, i, last))
    i = last + 1
  end
end

local function visit_bucket(deadlines, owner, budget, lease, lead, recover, full, lifetime, now)
  local bucket = K.bucket(deadlines)
  local claims, owners, warnings = K.claims(bucket), K.owners(bucket), K.warnings(bucket)
  local claimed, warned = {}, {}
  local taken = {}
  local claim_scores, owner_pairs, unscheduled, unwarned, reschedule = {}, {}, {}, {}, {}

  local function take(id, attempt, fresh)
    claimed[#claimed + 1] = {id, attempt}
    taken[id] = true
    if fresh then
      claim_scores[#claim_scores + 1] = now + lease
      claim_scores[#claim_scores + 1] = id
      owner_pairs[#owner_pairs + 1] = id
      owner_pairs[#owner_pairs + 1] = owner .. ' ' .. attempt
      unwarned[#unwarned + 1] = id
    end
  end

  -- After a lost reply: this owner's claims again (its listener skips those it runs already).
  if recover then
    local held = redis.call('HGETALL', owners)
    for i = 1, #held, 2 do
      local who, attempt = owner_of(held[i + 1])
      if who == owner then take(held[i], attempt, false) end
    end
  end
  -- Claims whose lease ran out: their listener died (or stopped renewing). Claimed again.
  if full then
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', claims, '-inf', now, 'LIMIT', 0, budget)) do
      if not taken[id] then
        local _, attempt = owner_of(redis.call('HGET', owners, id))
        take(id, attempt + 1, true)
        budget = budget - 1
      end
    end
  end
  if budget > 0 then
    -- The due entries name their timers: one MGET tells which sessions ended.
    local due = redis.call('ZRANGEBYSCORE', deadlines, '-inf', now, 'LIMIT', 0, budget)
    local ids, timers, idles, ends = {}, {}, {}, {}
    for i, member in ipairs(due) do
      local id, idle, deadline = string.match(member, '^([^:]+):(%d+):(%d+)$')
      ids[i], idles[i], ends[i] = id, idle, tonumber(deadline)
      timers[i] = K.timer(K.session(bucket, id), idle, deadline)
    end
    local values = {}
    for i = 1, #timers, 200 do
      local chunk = redis.call('MGET', unpack(timers, i, math.min(i + 199, #timers)))
      for j = 1, #chunk do values[i + j - 1] = chunk[j] end
    end
    for i, member in ipairs(due) do
      local id = ids[i]
      local left = -2
      if values[i] then
        left = redis.call('PTTL', timers[i])
        if left > 0 and now >= ends[i] then
          -- Past its absolute deadline (a late plain PEXPIRE kept the timer): it ends now.
          redis.call('DEL', timers[i])
          left = -2
        end
      end
      if left > 0 then
        -- Alive: the hint was early (activity since). Record the activity, come back at its end.
        local session = K.session(bucket, id)
        local expires = now + left
        local recorded = tonumber(redis.call('HGET', session, F.last_activity) or 0)
        local la = last_activity(recorded, now, left, idles[i])
        if la > recorded then redis.call('HSET', session, F.last_activity, la) end
        reschedule[#reschedule + 1] = expires
        reschedule[#reschedule + 1] = member
        if lead > 0 and expires < ends[i] - 5 then
          redis.call('ZADD', warnings, 'LT', expires - lead, id)
          keep(warnings, lifetime)
        end
      else
        unscheduled[#unscheduled + 1] = member
        if not taken[id] then take(id, 0, true) end
      end
    end
  end
  if #reschedule > 0 then multi('ZADD', deadlines, reschedule) end
  if #unscheduled > 0 then multi('ZREM', deadlines, unscheduled) end
  if lead > 0 and #unwarned > 0 then multi('ZREM', warnings, unwarned) end
  if #claim_scores > 0 then
    multi('ZADD', claims, claim_scores)
    multi('HSET', owners, owner_pairs)
  end
  if full then
    -- The claim keys get their TTL on full visits (every second or so), not on every visit.
    keep(claims, lifetime)
    keep(owners, lifetime)
  end

  if lead > 0 then
    local done = {}
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', warnings, '-inf', now, 'LIMIT', 0, budget + 100)) do
      local session = K.session(bucket, id)
      local f, _, left = alive(session, now, F.warned_for)
      local expires = f and now + left
      if not f or expires >= tonumber(f[2]) - 5 then
        done[#done + 1] = id
      elseif left > lead then
        redis.call('ZADD', warnings, expires - lead, id)
      else
        done[#done + 1] = id
        -- Once per period of activity: the period is named by when it would end (within a few ms:
        -- `now` and the timer's TTL are read at slightly different instants).
        if math.abs(tonumber(f[4] or 0) - expires) > 50 then
          redis.call('HSET', session, F.warned_for, expires)
          warned[#warned + 1] = {id, left}
        end
      end
    end
    if #done > 0 then multi('ZREM', warnings, done) end
  end

  local next_due = -1
  local indexes = lead > 0 and {deadlines, warnings} or {deadlines}
  for _, index in ipairs(indexes) do
    local first = redis.call('ZRANGE', index, 0, 0, 'WITHSCORES')
    if first[2] then
      local score = tonumber(first[2])
      if next_due < 0 or score < next_due then next_due = score end
    end
  end
  return {next_due, claimed, warned}
end

-- claim: visits due buckets and claims their ended sessions for this listener.
-- KEYS: the deadlines zset of each bucket to visit (all served by this node).
-- ARGV: [1] owner token [2] most sessions to claim per bucket [3] lease ms [4] warning lead ms
--   (0: none) [5] one digit per bucket, in KEYS order: 1 to also return this owner's claims
--   (after a lost reply), 2 for a full visit (also take over claims whose lease ran out), 3 for
--   both, 0 for neither [6] lifetime of the bucket's index keys ms [7] the most sessions to
--   claim in all (the listener's free hook slots; buckets are served in KEYS order)
-- Reply: {now, {next due, claimed, warnings} per bucket in KEYS order}
--   next due: when the bucket's next entry is due (ms), or -1
--   claimed: {id, attempt}...   (attempt 0 for the first claim)
--   warnings: {id, ms left}...
-- The listener reads the claimed sessions' data itself (HGETALL, LRANGE: an ended session does not
-- change any more), so that it never passes through Lua; data that is gone (the safety TTL ran out
-- before any listener came) is finalized with the reason 'lost'.
-- Live sessions found due are rescheduled to their timer (their last activity recorded, which a
-- touch does not write); a warning is given once per period of activity, never before an
-- absolute deadline (no activity could help).
local function claim(keys, args)
  local now = now_ms()
  local owner, budget, lease, lead = args[1], tonumber(args[2]), tonumber(args[3]), tonumber(args[4])
  local lifetime, total = tonumber(args[6]), tonumber(args[7])
  local out = {}
  for i = 1, #keys do
    local flag = tonumber(string.sub(args[5], i, i)) or 0
    local visit = visit_bucket(keys[i], owner, math.min(budget, total), lease, lead, flag % 2 == 1, flag >= 2, lifetime, now)
    total = math.max(0, total - #visit[2])
    out[i] = visit
  end
  return {now, out}
end

-- renew: extends this owner's claims while their hooks run.
-- KEYS: the deadlines zset of each bucket (this node's).
-- ARGV: [1] owner [2] lease ms, then per bucket in KEYS order: the number of ids, then the ids
-- Reply: the ids this owner still holds (renewed); the others were lost.
local function renew(keys, args)
  local now = now_ms()
  local until_ = now + tonumber(args[2])
  local held = {}
  local at = 3
  for k = 1, #keys do
    local bucket = K.bucket(keys[k])
    local n = tonumber(args[at])
    local ids = {}
    for i = 1, n do ids[i] = args[at + i] end
    at = at + n + 1
    if n > 0 then
      local owners = {}
      for i = 1, #ids, 200 do
        local chunk = redis.call('HMGET', K.owners(bucket), unpack(ids, i, math.min(i + 199, #ids)))
        for j = 1, #chunk do owners[i + j - 1] = chunk[j] end
      end
      local scores = {}
      for i, id in ipairs(ids) do
        if owner_of(owners[i]) == args[1] then
          scores[#scores + 1] = until_
          scores[#scores + 1] = id
          held[#held + 1] = id
        end
      end
      if #scores > 0 then multi('ZADD', K.claims(bucket), scores, 'XX') end
    end
  end
  return held
end

-- finalize: after the hooks ran, removes the sessions this owner still holds.
-- KEYS: the deadlines zset of each bucket (this node's).
-- ARGV: [1] owner [2] events channel, then per bucket in KEYS order: the number of sessions, then
--   for each: id, reason (idle_timeout, absolute_lifetime, deleted: its event went out already,
--   bound: it lives on under another id, or lost: its data was gone; the last two count nothing
--   and publish nothing), user, created_at (ms)
-- Reply: per session in order: 'done', 'gone' (nothing left: finalized already, e.g. a retry after
--   a lost reply) or 'lost' (another owner holds it now)
local function finalize(keys, args)
  local now = now_ms()
  local out = {}
  local at = 3
  for k = 1, #keys do
    local bucket = K.bucket(keys[k])
    local owners = K.owners(bucket)
    local n = tonumber(args[at])
    local items = {}
    local ids = {}
    for i = 1, n do
      local base = at + 1 + (i - 1) * 4
      items[i] = {args[base], args[base + 1], args[base + 2], args[base + 3]}
      ids[i] = args[base]
    end
    at = at + 1 + n * 4
    if n > 0 then
      local holders = {}
      for i = 1, #ids, 200 do
        local chunk = redis.call('HMGET', owners, unpack(ids, i, math.min(i + 199, #ids)))
        for j = 1, #chunk do holders[i + j - 1] = chunk[j] end
      end
      local doomed, done_ids = {}, {}
      local ended, lifetime_total = 0, 0
      local users = {}
      for i, item in ipairs(items) do
        local id, reason, user, created = item[1], item[2], item[3], tonumber(item[4])
        local who = owner_of(holders[i])
        if who == args[1] then
          local session = K.session(bucket, id)
          doomed[#doomed + 1] = session
          doomed[#doomed + 1] = K.messages(session)
          done_ids[#done_ids + 1] = id
          if user ~= '' then
            users[user] = users[user] or {}
            table.insert(users[user], id)
          end
          if reason ~= 'bound' and reason ~= 'lost' then
            ended = ended + 1
            lifetime_total = lifetime_total + math.max(0, now - created)
            if reason ~= 'deleted' then publish_event(args[2], now, 'expired', id, user, reason) end
          end
          out[#out + 1] = 'done'
        elseif who == nil and redis.call('EXISTS', K.session(bucket, id)) == 0 then
          out[#out + 1] = 'gone'
        else
          out[#out + 1] = 'lost'
        end
      end
      if #done_ids > 0 then
        delete_keys(doomed)
        multi('HDEL', owners, done_ids)
        multi('ZREM', K.claims(bucket), done_ids)
        for user, list in pairs(users) do
          local removed = 0
          for i = 1, #list, 200 do removed = removed + redis.call('ZREM', K.user(bucket, user), unpack(list, i, math.min(i + 199, #list))) end
          if removed > 0 and redis.call('HINCRBY', K.users(bucket), user, -removed) <= 0 then redis.call('HDEL', K.users(bucket), user) end
        end
        if ended > 0 then
          local stats = K.stats(bucket)
          redis.call('HINCRBY', stats, 'ended', ended)
          redis.call('HINCRBY', stats, 'ended_lifetime_ms', lifetime_total)
          redis.call('PEXPIRE', stats, STATS_LIFETIME)
        end
      end
    end
  end
  return out
end

-- listeners: registers an expiry listener and lists the live ones (they share the buckets).
-- KEYS[1] the registry zset. ARGV: [1] token [2] registration lifetime ms ('0' to leave)
-- Reply: the live tokens
local function listeners(keys, args)
  local now = now_ms()
  if args[2] == '0' then
    redis.call('ZREM', keys[1], args[1])
  else
    redis.call('ZADD', keys[1], now + tonumber(args[2]), args[1])
    redis.call('PEXPIRE', keys[1], tonumber(args[2]) * 10)
  end
  redis.call('ZREMRANGEBYSCORE', keys[1], '-inf', now)
  return redis.call('ZRANGE', keys[1], 0, -1)
end

------------------------------------------------------------------------------------------------
-- Binding an anonymous session to a user: its data moves to the user's bucket under a new id.
-- Two buckets are two slots, so it takes three calls, ordered so that a crash at any point
-- leaves the old session alive: begin (mark old), place (write new), finish (remove old).
-- The marks (binding_to, bound_from) let the expiry listener run one hook for the pair if a
-- crash left both.

-- bind_begin: KEYS[1] the anonymous session. ARGV: [1] the new id [2] the mark's lifetime ms.
-- Marks the session for the new id, or, when a bind marked it less than the lifetime ago (another
-- tab's login, or a retry after a failure), answers with that bind's id instead: every bind of a
-- session converges on one new session. While marked, writes to it are refused ('binding').
-- Reply: {'ok', timer expiry (ms), last heartbeat, HGETALL, messages, the new id}
--   | {'bound', new id} (a bind finished less than a minute ago) | {'not_alive'} | {'not_anonymous'}
local function bind_begin(keys, args)
  local now = now_ms()
  local f, timer = alive(keys[1], now, F.user, F.binding_to, F.binding_until)
  if not f then
    local bound = redis.call('GET', K.bound(keys[1]))
    if bound then return {'bound', bound} end
    return {'not_alive'}
  end
  if f[4] ~= '' then return {'not_anonymous'} end
  local target = args[1]
  if f[5] and tonumber(f[6] or 0) > now then
    target = f[5]
  else
    redis.call('HSET', keys[1], F.binding_to, target, F.binding_until, now + tonumber(args[2]))
  end
  return {'ok', redis.call('PEXPIRETIME', timer), redis.call('GET', timer) or '0', hgetall(keys[1]),
    redis.call('LRANGE', K.messages(keys[1]), 0, -1), target}
end

-- bind_place: KEYS[1] the new session (in the user's bucket).
-- ARGV: [1] user [2] old id [3] timer expiry (ms) [4] last heartbeat [5] warning lead ms
--   [6] lifetime of index keys ms [7] number of hash field/value pairs [8...] the pairs, then the
--   messages
-- Reply: {'ok', timer key, now} | {'exists'} | {'not_alive'} (the timer's expiry passed meanwhile)
-- The user's cap is applied once the bind has finished (cap_user): a bind that fails ends none of
-- the user's other sessions.
-- Placing again what a bind of the same session for the same user placed already is 'ok' (a
-- retried bind) while that session lives; once it ended (a log-out), 'not_alive': a late place
-- never brings it back.
local function bind_place(keys, args)
  local session = keys[1]
  local bucket, id = K.bucket(session), K.id(session)
  local now = now_ms()
  if redis.call('EXISTS', session) == 1 then
    local f = redis.call('HMGET', session, F.bound_from, F.user)
    if f[1] ~= args[2] or f[2] ~= args[1] then return {'exists'} end
    local alive_f, alive_timer = alive(session, now)
    if not alive_f then return {'not_alive'} end
    return {'ok', alive_timer, now}
  end
  if redis.call('EXISTS', K.placed(session)) == 1 then return {'not_alive'} end
  local expires = tonumber(args[3])
  if expires <= now then return {'not_alive'} end
  local npairs = tonumber(args[7])
  local fields = {}
  local idle, deadline, listener, data_until
  for i = 8, 7 + npairs * 2, 2 do
    local name, value = args[i], args[i + 1]
    if name == F.idle then idle = value elseif name == F.deadline then deadline = value
    elseif name == F.listener then listener = value elseif name == F.data_until then data_until = value end
    if name ~= F.binding_to and name ~= F.binding_until then
      fields[#fields + 1] = name
      fields[#fields + 1] = value
    end
  end
  fields[#fields + 1] = F.user
  fields[#fields + 1] = args[1]
  fields[#fields + 1] = F.bound_from
  fields[#fields + 1] = args[2]
  fields[#fields + 1] = F.last_activity
  fields[#fields + 1] = now
  hset_pairs(session, fields)
  redis.call('PEXPIREAT', session, data_until)
  if #args > 7 + npairs * 2 then
    rpush_all(K.messages(session), args, 8 + npairs * 2)
    redis.call('PEXPIREAT', K.messages(session), data_until)
  end
  local timer = K.timer(session, idle, deadline)
  redis.call('SET', timer, args[4], 'PXAT', expires)
  redis.call('SET', K.placed(session), args[2], 'PX', BIND_MARKER_MS)
  local lifetime = tonumber(args[6])
  if listener == '1' then schedule(bucket, id, idle, expires, deadline, args[5], lifetime) end
  index_for_user(bucket, id, args[1], now, lifetime)
  return {'ok', timer, now}
end

-- cap_user: applies a user's session cap after a bind finished (see enforce_cap).
-- KEYS[1] the session the user keeps (the bound one, in the user's bucket).
-- ARGV: [1] user [2] most sessions per user [3] events channel [4] lifetime of index keys ms
-- Reply: {'ok', sessions ended}
local function cap_user(keys, args)
  local session = keys[1]
  return {'ok', enforce_cap(K.bucket(session), K.id(session), args[1], now_ms(), tonumber(args[2]), args[3], tonumber(args[4]))}
end

-- bind_finish: KEYS[1] the anonymous session. ARGV: [1] the new id [2] events channel.
--   Removes it if it is still marked for that new id (no hook: it lives on), and the mark has not
--   lapsed (after that it took writes the new session lacks).
-- Reply: {'ok'} (also when another bind converging on the same id finished it) | {'not_found'}
--   (gone otherwise) | {'not_alive'} (it ended or was deleted meanwhile) | {'other'} (marked for
--   another id since a mark lapsed) | {'lapsed'}
-- Anything but 'ok' means the copy must go (bind_undo): the old session's fate decides.
local function bind_finish(keys, args)
  local session = keys[1]
  local now = now_ms()
  local f = redis.call('HMGET', session, F.binding_to, F.idle, F.deadline, F.user, F.binding_until)
  if not f[1] then
    if redis.call('GET', K.bound(session)) == args[1] then return {'ok'} end
    return {'not_found'}
  end
  if f[1] ~= args[1] then return {'other'} end
  if not alive(session, now) then return {'not_alive'} end
  if tonumber(f[5] or 0) <= now then return {'lapsed'} end
  local bucket, id = K.bucket(session), K.id(session)
  remove_session(bucket, id, session, f[2], f[3], f[4])
  redis.call('SET', K.bound(session), args[1], 'PX', BIND_MARKER_MS)
  publish_event(args[2], now, 'rotated', id, '', string.sub(args[1], 1, 9))
  return {'ok'}
end

-- bind_undo: KEYS[1] the new session of a bind whose finish found the mark lapsed. ARGV: [1] the
--   old id. Removes the copy without a hook (the old session lives on with its later writes).
-- Reply: {'ok'} | {'not_found'}
local function bind_undo(keys, args)
  local session = keys[1]
  local f = redis.call('HMGET', session, F.bound_from, F.idle, F.deadline, F.user)
  if f[1] ~= args[1] then return {'not_found'} end
  remove_session(K.bucket(session), K.id(session), session, f[2], f[3], f[4])
  return {'ok'}
end

-- partner (read-only): what the expiry listener needs to decide a bound pair's one hook.
-- KEYS[1] a session hash. Reply: {exists (0/1), alive (0/1), binding_to or ''}
local function partner(keys)
  local f = redis.call('HMGET', keys[1], F.idle, F.deadline, F.binding_to, F.state)
  if not f[1] then return {0, 0, ''} end
  local live = f[4] ~= 'deleted' and redis.call('PTTL', K.timer(keys[1], f[1], f[2])) > 0
  return {1, live and 1 or 0, f[3] or ''}
end

------------------------------------------------------------------------------------------------
-- Locks. KEYS[1] is the lock key '<session>:lock[:<tab>]'; its queue and waiter heartbeats are
-- KEYS[1]..':queue' and KEYS[1]..':seen'. The uncontended acquire is lock_take; waiting and
-- takeovers are lock_acquire.

-- The fencing token of a grant: this server's clock in microseconds, or one more than the last
-- token any lock of the session was granted, whichever is larger. The last one is kept in the
-- session hash (field 'fence'), so it replicates and persists with the session: a failover to a
-- replica with a slower clock, or a clock stepped back, never hands out a token smaller than one
-- this server has seen. Tokens stay far below 2^53 (exact in Lua's numbers) until the year 2255.
-- A lock of a session with no hash, or a deleted one, gets the clock alone.
local function next_fence(lock)
  local t = redis.call('TIME')
  local fence = tonumber(t[1]) * 1000000 + tonumber(t[2])
  -- The session's key, from the lock's (tab names have no ':'); same bucket, same slot.
  local session = string.match(lock, '^(.*:session:[^:]+):lock')
  if not session then return fence end
  local f = redis.call('HMGET', session, F.state, F.fence)
  -- No hash, or a deleted session's: the clock alone (nothing is written for a dead session).
  if f[1] == false or f[1] == 'deleted' then return fence end
  local last = tonumber(f[2] or 0)
  -- A field someone wrote by hand that is no token (or past exact integers) is ignored.
  if last and last < 2 ^ 53 then fence = math.max(fence, last + 1) end
  redis.call('HSET', session, F.fence, int(fence))
  return fence
end

local function wake_next(lock, queue, seen, stale_ms, now)
  -- Skip waiters that stopped asking (their process died), then hand the lock to the next one
  -- directly: the lock never looks free while others wait, so nobody barges in.
  while true do
    local head = redis.call('ZRANGE', queue, 0, 0)[1]
    if not head then return nil end
    local seen_at = tonumber(redis.call('HGET', seen, head) or 0)
    if now - seen_at <= stale_ms then return head end
    redis.call('ZREM', queue, head)
    redis.call('HDEL', seen, head)
  end
end

-- lock_take: the uncontended acquire. ARGV: [1] token [2] lease ms.
-- Reply: {'granted', fence} | 'held' (someone holds it or waiters queue: nothing changed)
local function lock_take(keys, args)
  if not redis.call('SET', keys[1], args[1], 'NX', 'PX', args[2]) then return 'held' end
  return {'granted', next_fence(keys[1])}
end

-- lock_acquire: the contended path (and takeover).
-- ARGV: [1] token [2] lease ms [3] 'wait' (queue up), 'try' (do not) or 'takeover'
--   [4] ms after which a waiter that stopped asking is skipped [5] '1' when this token is queued
-- Reply: {'granted', fence} | {'held', holder's ms left}
local function lock_acquire(keys, args)
  local lock = keys[1]
  local queue, seen = lock .. ':queue', lock .. ':seen'
  local token, lease, mode = args[1], args[2], args[3]
  local function granted()
    redis.call('ZREM', queue, token)
    redis.call('HDEL', seen, token)
    return {'granted', next_fence(lock)}
  end
  if mode == 'takeover' then
    redis.call('SET', lock, token, 'PX', lease)
    return granted()
  end
  local holder = redis.call('GET', lock)
  if holder == token or holder == token .. ' q' then
    -- Handed over by a release (or a retry after a lost reply): ours, with the full lease.
    redis.call('SET', lock, (redis.call('EXISTS', queue) == 1) and token .. ' q' or token, 'PX', lease)
    return granted()
  end
  local now = now_ms()
  if not holder then
    local head = wake_next(lock, queue, seen, tonumber(args[4]), now)
    if not head or head == token then
      local waiting = head and redis.call('ZCARD', queue) > 1
      redis.call('SET', lock, waiting and token .. ' q' or token, 'PX', lease)
      return granted()
    end
    -- The lock is free but another waiter is first: it gets it now, for a short handover lease.
    redis.call('SET', lock, head .. ' q', 'PX', math.min(tonumber(lease), tonumber(args[4])))
    redis.call('SPUBLISH', K.wakeups(K.bucket(lock)), head)
    holder = head .. ' q'
  end
  if mode == 'wait' then
    redis.call('ZADD', queue, 'NX', now, token)
    redis.call('HSET', seen, token, now)
    local keep_ms = tonumber(args[4]) * 4 + tonumber(lease)
    redis.call('PEXPIRE', queue, keep_ms)
    redis.call('PEXPIRE', seen, keep_ms)
    if string.sub(holder, -2) ~= ' q' then redis.call('SET', lock, holder .. ' q', 'KEEPTTL') end
  end
  return {'held', math.max(redis.call('PTTL', lock), 1)}
end

-- lock_release: ARGV: [1] token [2] ms after which a waiter that stopped asking is skipped
--   [3] handover lease ms. Releases if the caller holds the lock; with waiters, hands it to the
--   first one (short lease until it takes it) and wakes it.
-- Reply: 'ok' released | 'not_held' not the holder (nothing changes: safe to retry)
local function lock_release(keys, args)
  local lock = keys[1]
  local holder = redis.call('GET', lock)
  if holder == args[1] then
    redis.call('DEL', lock)
    return 'ok'
  end
  if holder ~= args[1] .. ' q' then return 'not_held' end
  local queue, seen = lock .. ':queue', lock .. ':seen'
  local head = wake_next(lock, queue, seen, tonumber(args[2]), now_ms())
  if head then
    redis.call('SET', lock, head .. ' q', 'PX', args[3])
    redis.call('SPUBLISH', K.wakeups(K.bucket(lock)), head)
  else
    redis.call('DEL', lock)
  end
  return 'ok'
end

-- lock_extend: ARGV: [1] token [2] lease ms. Reply: 'ok' extended | 'not_held' not the holder.
local function lock_extend(keys, args)
  local holder = redis.call('GET', keys[1])
  if holder ~= args[1] and holder ~= args[1] .. ' q' then return 'not_held' end
  redis.call('PEXPIRE', keys[1], args[2])
  return 'ok'
end

-- lock_abandon: a waiter gives up (timeout, cancellation). ARGV: [1] token [2] stale ms
--   [3] handover lease ms. If the lock had been handed to it, it passes on to the next waiter.
-- Reply: 'ok'
local function lock_abandon(keys, args)
  local lock = keys[1]
  local queue, seen = lock .. ':queue', lock .. ':seen'
  redis.call('ZREM', queue, args[1])
  redis.call('HDEL', seen, args[1])
  if redis.call('GET', lock) == args[1] .. ' q' then
    local head = wake_next(lock, queue, seen, tonumber(args[2]), now_ms())
    if head then
      redis.call('SET', lock, head .. ' q', 'PX', args[3])
      redis.call('SPUBLISH', K.wakeups(K.bucket(lock)), head)
    else
      redis.call('DEL', lock)
    end
  end
  return 'ok'
end

-- import_redeem: hands out the session imported under a former id (SessionStore.importSession).
--   KEYS: [1] ns:{c}:imported:<former id>, which holds the new session's id (or 'pending' while
--   the import creates it). ARGV: [1] grace ms [2] how long a spent pointer is kept (ms).
--   The first call replaces the id with 'spent:<id>:<ms>', kept ARGV[2] ms so that an import run
--   again finds the former id taken and does not bring it back; calls within ARGV[1] ms of the
--   first get the same id (tabs restored together, a retry after a lost response), later ones
--   nothing.
-- Reply: {'ok', id} | 'not_found' (unknown, pending, or spent longer ago than the grace)
local function import_redeem(keys, args)
  local value = redis.call('GET', keys[1])
  if not value or value == 'pending' then return 'not_found' end
  local now = now_ms()
  local spent, at = string.match(value, '^spent:([^:]+):(%d+)$')
  if spent then
    if now - tonumber(at) <= tonumber(args[1]) then return {'ok', spent} end
    return 'not_found'
  end
  redis.call('SET', keys[1], 'spent:' .. value .. ':' .. int(now), 'PX', args[2])
  return {'ok', value}
end

-- The probe key of `key`'s slot: the key's bucket prefix (or the key itself) and a name no key
-- of the store has, so that it shares the slot and the namespace (an ACL's `~ns:*` covers it).
-- Nil for a key without a hash tag (the store has none).
local function probe_of(key)
  if not string.find(key, '{[^}]+}') then return nil end
  return (K.bucket(key) or key) .. 'migration-probe'
end

-- While a slot migrates its keys are split between two nodes, and Redis stops a function at the
-- first key it reaches that is not on the node (moved already, or missing: "non local key"),
-- keeping what the function wrote before. So a function that writes first reads, for the slot
-- of each of its keys, a key that never exists: while the slot migrates Redis refuses that read,
-- and the function answers TRYAGAIN having changed nothing; the client tries again, within its
-- timeout, and the call runs whole on the slot's owner once the slot is handed over. (On the
-- importing node functions never run: the client does not follow ASK with them.) Any other
-- refusal of the probe leaves the function to run as it would without it.
-- Only a cluster migrates slots: whether this server is one is asked once (CLUSTER KEYSLOT says
-- "cluster support disabled" outside one) and kept for the life of the library, which a restart
-- reloads. A refusal (an ACL without CLUSTER) is asked once too, and counts as a cluster: the
-- probe then runs everywhere.
local in_cluster = nil
local function unless_migrating(callback)
  return function(keys, args)
    if in_cluster == nil then
      local reply = redis.pcall('CLUSTER', 'KEYSLOT', 'x')
      local refusal = type(reply) == 'table' and reply.err or nil
      in_cluster = not (refusal and string.find(refusal, 'cluster support disabled', 1, true))
    end
    if in_cluster == false then return callback(keys, args) end
    local probed = {}
    for i = 1, #keys do
      local probe = probe_of(keys[i])
      if probe and not probed[probe] then
        probed[probe] = true
        local reply = redis.pcall('EXISTS', probe)
        if type(reply) == 'table' and reply.err and string.find(reply.err, 'non local key', 1, true) then
          return redis.error_reply('TRYAGAIN the slot is migrating; nothing was written')
        end
      end
    end
    return callback(keys, args)
  end
end

local function register(name, callback, read_only, cross_slot)
  local flags = {}
  if read_only then
    flags[#flags + 1] = 'no-writes'
  else
    callback = unless_migrating(callback)
  end
  if cross_slot then flags[#flags + 1] = 'allow-cross-slot-keys' end
  redis.register_function{function_name = 'session_v3_' .. name, callback = callback, flags = flags}
end

register('create', create)
register('touch', touch)
register('heartbeat', heartbeat)
register('resume', resume)
register('get', get, true)
register('recent_messages', recent_messages, true)
register('append', append)
register('clear_messages', clear_messages)
register('set_metadata', set_metadata)
register('rotate', rotate)
register('delete', delete)
register('delete_user', delete_user)
register('list', list, true)
register('devices', devices, true)
register('end_device', end_device)
register('set_device', set_device)
register('stats', stats, true)
register('claim', claim, false, true)
register('renew', renew, false, true)
register('finalize', finalize, false, true)
register('listeners', listeners)
register('bind_begin', bind_begin)
register('bind_place', bind_place)
register('bind_finish', bind_finish)
register('cap_user', cap_user)
register('bind_undo', bind_undo)
register('partner', partner, true)
register('lock_take', lock_take)
register('lock_acquire', lock_acquire)
register('lock_release', lock_release)
register('lock_extend', lock_extend)
register('lock_abandon', lock_abandon)
register('import_redeem', import_redeem)
