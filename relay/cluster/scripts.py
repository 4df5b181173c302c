"""The Lua scripts cluster nodes run in Redis. Each runs atomically, which is what makes the
cluster's guarantees hold: a holder's messages are written and published only while its lease is
its own (fencing: a node that lost its lease can never publish again, whatever its clock says),
and a join reads a channel's seq, state and history at one instant between two of its messages.

Keys are built inside the scripts from the prefix, so they assume one Redis (not Redis
Cluster), as docs/scaling.md says.
"""

from __future__ import annotations

PUBLISH = """
-- KEYS[1]: the source's lease. ARGV[1]: this holder's token, ARGV[2]: the prefix,
-- ARGV[3]: the source; then 8 values per entry:
--   kind ('m' message, 'c' control, 'f' forget a channel's state), channel, seq, ts,
--   header, payload, state ('' none), history length ('0' none).
-- Answers 0 (and does nothing) when the lease is not this holder's, else 1.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local p = ARGV[2]
local seqs = p .. ':seqs:' .. ARGV[3]
for i = 4, #ARGV, 8 do
  local kind, ch = ARGV[i], ARGV[i + 1]
  if kind == 'm' then
    local seq, ts, payload, state = ARGV[i + 2], ARGV[i + 3], ARGV[i + 5], ARGV[i + 6]
    redis.call('HSET', seqs, ch, seq)
    local chan = p .. ':chan:' .. ch
    if state ~= '' then
      redis.call('HSET', chan, 'seq', seq, 'ts', ts, 'snap', state)
    else
      redis.call('HSET', chan, 'seq', seq, 'ts', ts)
    end
    local keep = ARGV[i + 7]
    if keep ~= '0' then
      redis.pcall('XADD', p .. ':hist:' .. ch, 'MAXLEN', '~', keep, seq .. '-1',
        'ts', ts, 'f', payload)
    end
    local tail = state
    if tail == payload then
      tail = ''
    end
    redis.call('PUBLISH', p .. ':msg:' .. ch, ARGV[i + 4] .. payload .. tail)
  elseif kind == 'c' then
    redis.call('PUBLISH', p .. ':ctl', ARGV[i + 5])
  elseif kind == 'f' then
    redis.call('HDEL', p .. ':chan:' .. ch, 'snap')
    redis.call('PUBLISH', p .. ':ctl', ARGV[i + 5])
  end
end
return 1
"""

JOIN = """
-- ARGV[1]: the prefix, ARGV[2]: the node's answer channel, ARGV[3]: the join's id,
-- ARGV[4]: the oldest ts history may replay; then 2 values per channel: the channel, and
-- the seq the client resumes after ('' when it does not resume).
-- Publishes the answer on the node's channel, in order with the messages of the channels
-- the node already follows.
local p = ARGV[1]
local out = {}
local oldest = tonumber(ARGV[4])
for i = 5, #ARGV, 2 do
  local ch, since = ARGV[i], ARGV[i + 1]
  local h = redis.call('HMGET', p .. ':chan:' .. ch, 'seq', 'ts', 'snap')
  local seq = tonumber(h[1]) or 0
  local entry = {channel = ch, seq = seq, ts = tonumber(h[2]) or 0, snap = h[3], missed = false}
  if since ~= '' then
    local after = tonumber(since)
    if after == seq then
      entry.missed = {}
    elseif after < seq then
      local rows = redis.call('XRANGE', p .. ':hist:' .. ch, (after + 1) .. '-0', '+')
      local frames = {}
      local expect = after + 1
      for _, row in ipairs(rows) do
        local id = tonumber(string.match(row[1], '^(%d+)'))
        if id ~= expect or tonumber(row[2][2]) < oldest then
          break
        end
        frames[#frames + 1] = row[2][4]
        expect = expect + 1
      end
      if expect == seq + 1 then
        entry.missed = frames
      end
    end
  end
  out[#out + 1] = entry
end
redis.call('PUBLISH', ARGV[2], cjson.encode({id = ARGV[3], channels = out}))
return 1
"""

SEED_SEQS = """
-- KEYS[1]: a source's seqs. ARGV: channel, seq pairs a node relayed last. Raises each
-- channel's seq to at least that: after Redis lost its data, numbering goes on from what the
-- nodes saw rather than from 1.
for i = 1, #ARGV, 2 do
  local known = tonumber(redis.call('HGET', KEYS[1], ARGV[i])) or 0
  if known < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 1
"""

PUBLISH_APP = """
-- An application's message on a [published] channel, from any node: Redis numbers it.
-- ARGV: the prefix, the source, the channel, the envelope's parts before and after its seq,
-- its ts, '1' when the message is the channel's whole state (a state channel), the history
-- length ('0' none). Answers the seq.
local p, ch = ARGV[1], ARGV[3]
local seq = redis.call('HINCRBY', p .. ':seqs:' .. ARGV[2], ch, 1)
local payload = ARGV[4] .. seq .. ARGV[5]
local ts = ARGV[6]
local chan = p .. ':chan:' .. ch
local flags = 0
if ARGV[7] == '1' then
  -- A snapshot, and the channel's state: the payload itself (flags SNAPSHOT, STATE_IS_PAYLOAD).
  flags = 3
  redis.call('HSET', chan, 'seq', seq, 'ts', ts, 'snap', payload)
else
  redis.call('HSET', chan, 'seq', seq, 'ts', ts)
end
if ARGV[8] ~= '0' then
  redis.pcall('XADD', p .. ':hist:' .. ch, 'MAXLEN', '~', ARGV[8], seq .. '-1',
    'ts', ts, 'f', payload)
end
local header = struct.pack('>i8i8BI4', seq, tonumber(ts), flags, #payload)
redis.call('PUBLISH', p .. ':msg:' .. ch, header .. payload)
return seq
"""

ADMIT = """
-- A connection of one key, on one node, if the key's connections on every live node are
-- under its tier's limit. KEYS[1]: the key's connections, KEYS[2]: the live nodes.
-- ARGV[1]: this node, ARGV[2]: the limit. Forgets dead nodes' counts. Answers 1 (counted)
-- or 0 (refused).
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local total = 0
local rows = redis.call('HGETALL', KEYS[1])
for i = 1, #rows, 2 do
  local alive = tonumber(redis.call('ZSCORE', KEYS[2], rows[i]) or '0')
  if rows[i] == ARGV[1] or alive >= ms then
    total = total + tonumber(rows[i + 1])
  else
    redis.call('HDEL', KEYS[1], rows[i])
  end
end
if total >= tonumber(ARGV[2]) then
  return 0
end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return 1
"""

WANTED = """
-- KEYS[1]: a source's wants, KEYS[2]: the live nodes. ARGV[1]: this node, ARGV[2]: its
-- channels of the source (space-separated, '' for none), ARGV[3]: ms a node stays alive.
-- Records this node's wants and liveness, forgets dead nodes, answers the union.
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[2], ms + tonumber(ARGV[3]), ARGV[1])
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local union = {}
local rows = redis.call('HGETALL', KEYS[1])
for i = 1, #rows, 2 do
  local alive = tonumber(redis.call('ZSCORE', KEYS[2], rows[i]) or '0')
  if alive < ms then
    redis.call('HDEL', KEYS[1], rows[i])
  else
    union[#union + 1] = rows[i + 1]
  end
end
return table.concat(union, ' ')
"""
