-- move.lua: change the priority of waiting jobs of one queue, or take them out of it to
-- move them to another queue (step 1 of a move: runtime.broker.moves).
-- KEYS[1..]  per job: its hash
-- ARGV[1]  key prefix
-- ARGV[2]  target queue ('': each job keeps its own)
-- ARGV[3]  target priority ('': each job keeps its own)
-- ARGV[4]  who asked and from where ("" for no one named), kept as ``by`` in the history entry
-- ARGV[5..] job ids
-- Found inside: the ready and scheduled sets, wake list, status indexes and moving set of
-- the jobs' queue (every key in its hash slot).
-- Only a job that waits in a queue moves: a member of its queue's ready set (queued,
-- interrupt) or of its scheduled set (delayed, retry).
-- Within its queue (no new id): its ready score is made again from its due time and the
-- target priority (a scheduled job keeps its score); its status is unchanged and a history
-- entry of that status notes the move.
-- To another queue: it gets a new id there (its id must name its queue, whose hash slot
-- holds its keys): ``{target}:{rest}@m{12 hex}``, rest its id after its queue (without an
-- earlier move's suffix), the hex digits the SHA-1 of its id and queued_at (so the same
-- move always gives the same id, and a caller-chosen id queued again after its moved
-- document expired gets another). It leaves its queue's sets, ends moved (``moved_to``:
-- the new id) and enters the queue's moving set until its copy is confirmed (settle.lua);
-- its history's moved entry names the new id (``to``), the status it waited in (``was``)
-- and the target priority. A job moved to the target queue before (this move sent again,
-- or one done already) is not moved again.
-- Returns one reply per job: 'ok' (within its queue), 'missing', the status of a job that
-- does not wait in a queue (running, final; 'moved' for one moved to another queue than
-- the target), or for a job moved to the target queue {'ok' (moved by this call) or
-- 'already-moved' (moved there before: this same move made again changes nothing, gives
-- the same new id and says so), its new id, '1' and then its document (flat hash fields:
-- the copy is made from it, land.lua) while it is in the moving set, else ''}.
--@LIB@--
local target_q, target_p, who = ARGV[2], ARGV[3], ARGV[4]
local IDS = 5
local now, snow = clock()
local out = {}

-- moved(jk, id, new, verdict): the reply for job id (hash jk) moved to the target queue
local function moved(jk, id, new, verdict)
  if redis.call('ZSCORE', key_moving(queue_of(jk)), id) then
    local r = redis.call('HGETALL', jk)
    table.insert(r, 1, verdict)
    table.insert(r, 2, new)
    table.insert(r, 3, '1')
    return r
  end
  return {verdict, new, ''}
end

for i = IDS, #ARGV do
  local id = ARGV[i]
  local jk = KEYS[1 + i - IDS]
  local cur = redis.call('HMGET', jk, 'status', 'queue', 'priority', 'due_at', 'moved_to', 'queued_at')
  local st, q = cur[1], cur[2]
  local new = ''
  if st and target_q ~= '' and target_q ~= q then
    local rest = string.gsub(string.match(id, '^[^:]*:(.*)$') or id, '@m' .. string.rep('[0-9a-f]', 12) .. '$', '')
    new = target_q .. ':' .. rest .. '@m' .. string.sub(redis.sha1hex(id .. '\0' .. (cur[6] or '')), 1, 12)
  end
  local tp = target_p ~= '' and tonumber(target_p) or (tonumber(cur[3]) or 0)
  local ready = st and redis.call('ZSCORE', key_ready(q), id)
  local sched = st and (not ready) and redis.call('ZSCORE', key_scheduled(q), id)
  if not st then
    out[#out + 1] = 'missing'
  elseif st == 'moved' and target_q ~= '' and cur[5] and string.match(cur[5], '^([^:]*):') == target_q then
    out[#out + 1] = moved(jk, id, cur[5], 'already-moved')  -- moved there before: this same move, again
  elseif (not ready and not sched) or (new ~= '' and not can_move(st, 'moved')) then
    out[#out + 1] = st
  elseif new == '' then
    if ready then
      redis.call('ZADD', key_ready(q), score(tp, (tonumber(cur[4]) or now) * 1000), id)
      wake(key_wake(q))
    end
    redis.call('HSET', jk, 'priority', tp)
    local kv = {'note', 'moved from ' .. q .. ' (priority ' .. (cur[3] or '0') .. ') to ' .. q ..
                        ' (priority ' .. string.format('%d', tp) .. ')'}
    if who ~= '' then kv[3], kv[4] = 'by', who end
    log_entry(jk, entry(snow, st, kv))
    out[#out + 1] = 'ok'
  else
    redis.call('ZREM', ready and key_ready(q) or key_scheduled(q), id)
    redis.call('HSET', jk, 'status', 'moved', 'moved_to', new, 'ended_at', snow)
    reindex(q, id, st, 'moved', snow)
    redis.call('ZADD', key_moving(queue_of(jk)), snow, id)
    local kv = {'to', new, 'was', st, 'priority', tp,
                'note', 'moved to ' .. target_q .. ' (priority ' .. string.format('%d', tp) .. ')'}
    if who ~= '' then kv[9], kv[10] = 'by', who end
    log_entry(jk, entry(snow, 'moved', kv))
    out[#out + 1] = moved(jk, id, new, 'ok')
  end
end
return out
