-- reserve.lua: decide a batch of purchases of one activity, atomically, in arrival order.
-- Each accepted purchase deducts stock, adds to the buyer's total, counts as sold and is
-- queued in the activity's order stream in this same script, so a unit can neither be
-- sold twice nor be deducted without its reservation being queued. The batch's accepted
-- purchases go into ONE stream entry (decoded in src/reservation/entry.rs): activity,
-- reserved_ms, then per run of consecutive purchases of one product: product, price, buyers
-- (the user ids, space-separated: ids hold no whitespace) and quantities (same order).
-- src/scripts.rs puts lib/set_probe.lua (probe_sets, the blacklist and revoked check it
-- shares with bucket_buy.lua) and lib/totals.lua (array_offset: where a buyer's total lives,
-- the bought hash or the product's totals array) in front of it.
--
-- KEYS[1]  activity hash    P:{a:A}:activity   (status, start_ms, end_ms, id)
-- KEYS[2]  order stream     P:{a:A}:orders
-- KEYS[3]  blacklist set    P:{a:A}:blacklist
-- KEYS[4]  revoked set      P:{a:A}:revoked    (users whose token the operator revoked)
-- KEYS[5 .. 4+3M]   per product of the batch, three keys: P:{a:A}:product:ID,
--                   P:{a:A}:bought:ID, P:{a:A}:totals:ID
-- ARGV[1]  the least persist sequence the caller knows MySQL has recorded ('0': unknown, no
--          check); a lower one in the activity hash means Redis went back in time
--          (src/lost_state.rs)
-- ARGV[2 .. 1+M]    the product ids, in the order of their keys (M, the number of distinct
--                   products, is (#KEYS - 4) / 3)
-- ARGV[2+M]         E, the number of unusual requests: those that are not (first product,
--                   quantity 1), and every request of a buyer who asks for one product more
--                   than once in the batch (the script keeps the buyers' totals so far in a
--                   table only for these: a usual request's buyer must be alone); or '#'
--                   (numbered): none, and each user id below comes as '#' and the id, a whole
--                   number (src/buy.rs passes a batch of one product so when every buyer's id
--                   is a number below its `redis.numeric_user_ids_below`, so that the totals
--                   array's BITFIELD takes them as offsets as they are)
-- then E triples    request number (1..N, rising), product (1..M, its place above), quantity
-- then N values     the user id of each request, in request order (N is what is left of ARGV)
--
-- Returns one string of words separated by single spaces:
--   verdicts  one character per request, in request order: '.' queued (the k-th '.' is
--             purchase k, from 0, of the entry), else the refusal: S suspended, N not_found,
--             T not_started, P paused, E ended, B blacklisted, I invalid_token (revoked),
--             R bad_request, L limit_exceeded, O sold_out
--   stock     M words: each product's stock before the batch, as stored (-1 when the product
--             is unknown); the caller works out each request's remaining stock from it and
--             the verdicts
--   entry id  "<ms>-<seq>" of the entry holding the accepted purchases, only when there are any
-- A numbered batch whose totals go to the array writes its run's buyers as they came, '#' and
-- the id each, under `buyer_numbers` instead of `buyers`; any other batch first takes the '#'
-- off every id and goes on as if they had come plain.
-- Checks run in this order: activity not suspended (status `lost`, or a persist sequence
-- below ARGV[1]: Redis lost state, see src/lost_state.rs), product exists, activity online
-- and now (Redis TIME) within its window, user not blacklisted, user's token not revoked
-- (the token's signature and expiry are checked by `serve` before the batch: src/token.rs),
-- 1 <= quantity <= max_per_order, user's total within the limit, enough stock.
--
-- A batch of one product whose buyers all keep their totals in its totals array and all ask
-- for one unit (the usual flash sale of numbered users) raises every buyer's total with one
-- BITFIELD and takes back, with a second, the units of the requests it refuses: no lookup in a
-- hash of every buyer so far. A batch that mixes the two places goes through the general loop.
-- Cost matters here: Redis spends more time on this script than on anything else in a sale,
-- and per purchase it is mostly Lua (argument strings, table stores, garbage) and the
-- per-field work of commands. So a usual purchase passes one argument and runs no command
-- of its own: a product's keys are passed, and its hash read, once per batch; its buyers'
-- totals are read with one HMGET (at its first purchase that gets that far) and the
-- accepted buyers' new totals written with one HSET at the end, as are its stock and sold
-- counters (the script is atomic, so nobody sees the difference); a buyer's new total is
-- the quantity string passed when the buyer had none, so the usual purchase formats no
-- number; a batch of one product is decided in locals with no table per usual request, and
-- its entry's buyers are the arguments joined; the blacklist and the revoked set are probed
-- only when they exist, with one SMISMEMBER of the batch's buyers each. A call also has a
-- fixed cost, paid once per batch and a large share of the whole at the batch sizes of real
-- load (Redis builds the KEYS and ARGV tables, runs the batch's commands, turns their
-- replies into Lua tables and the answer into a reply, and Lua collects the garbage): so the
-- batch's sizes are not passed but follow from KEYS and ARGV; a batch of one product is
-- decided in straight-line code that creates no closure with upvalues (each costs an
-- allocation per upvalue, and garbage) and no table per product; strings are converted by
-- arithmetic, once (Lua 5.1's tonumber converts twice), where a missing value would fail
-- anyway; the answer is one string (Redis converts a table field by field). Under
-- `appendonly yes` the script's effects are replicated command by command: a batch writes
-- one HSET of totals per product (or, in the totals array, one BITFIELD raising them and one
-- taking back the refused), one XADD and one HSET of counters per product, whatever its size.
-- Redis does not roll a failed script back: if any command fails, the totals and counters of
-- the purchases already decided are written back, and their entry added, before the script
-- aborts with that error, so every queued reservation always has its unit deducted and its
-- buyer's total raised. A failure before the first purchase is decided (the reads before it
-- run with redis.call, which raises) changes nothing; so does every failure of a batch of one
-- product that comes before its writes (its reads, or a stored total that is not a whole
-- number), since it is decided in locals and writes only at the end.

local argv, keys = ARGV, KEYS
local pcall_redis, format = redis.pcall, string.format
local m, min_seq = (#keys - 4) / 3, argv[1]
-- Up to the first write a failed command aborts the script with nothing changed, so the reads
-- of this prefix use redis.call, which raises.
local activity = redis.call('HMGET', keys[1], 'status', 'start_ms', 'end_ms', 'id', 'persist_seq')
local status = activity[1]
local t = redis.call('TIME')
local us = t[2] + 0
local now_ms = t[1] * 1000 + (us - us % 1000) / 1000
local refusal
if not status then
    refusal = 'N'
elseif status == 'lost' or (min_seq ~= '0' and (tonumber(activity[5]) or 0) < min_seq + 0) then
    refusal = 'S'
elseif status == 'online' then
    if now_ms < activity[2] + 0 then
        refusal = 'T'
    elseif now_ms >= activity[3] + 0 then
        refusal = 'E'
    end
elseif status == 'paused' then
    refusal = 'P'
elseif status == 'ended' then
    refusal = 'E'
else
    refusal = 'T'
end
local e_count = argv[2 + m]
local numbered = e_count == '#'
e_count = (e_count == '0' or numbered) and 0 or e_count + 0
local first_user = 2 + m + 3 * e_count
local n = #argv - first_user
if numbered and m ~= 1 then
    for i = first_user + 1, first_user + n do
        argv[i] = string.sub(argv[i], 2)
    end
    numbered = false
end
-- A total read from a bought hash (a string) or kept in pending (a number), as a number; a
-- stored total that is not a whole number fails as HINCRBY would.
local function whole(total)
    if type(total) == 'string' then
        if not string.find(total, '^%-?%d+$') then
            error('ERR hash value is not an integer', 0)
        end
        return total + 0
    end
    return total
end
-- A passed quantity as a number and in canonical decimal (nil when not a positive whole number).
local function quantity_of(passed)
    local quantity = tonumber(passed)
    if not quantity or quantity < 1 or quantity ~= math.floor(quantity) then
        return nil
    end
    if not string.find(passed, '^[1-9]%d*$') then
        passed = format('%d', quantity)
    end
    return quantity, passed
end
-- A batch of one product is decided in straight-line code, in locals, with no table per usual
-- request.
if m == 1 then
    local first = redis.call('HMGET', keys[5], 'stock', 'sold', 'limit', 'max_per_order', 'price', 'ids_below')
    local stock = tonumber(first[1])
    if refusal then
        return string.rep((refusal ~= 'S' and not stock) and 'N' or refusal, n) .. (stock and ' ' .. first[1] or ' -1')
    end
    if not stock then
        return string.rep('N', n) .. ' -1'
    end
    -- Where the buyers' totals are (lib/totals.lua): all in the bought hash, or all in the
    -- totals array with one unit each (`array`), or a mix, which the general loop below takes.
    -- A batch whose first buyer's total is in the array tries the array at once: the BITFIELD
    -- raising every buyer's total by one is built with only a quick test per buyer (its id no
    -- longer than the bound, and below it when as long, and not '0'); the rest of the rule
    -- (digits only, no leading zero) is BITFIELD's own, which refuses, changing nothing, an
    -- offset '#<id>' that is not such a number. A batch the quick test or BITFIELD refuses is
    -- sorted with array_offset. (array_offset's pattern match costs more per buyer than all
    -- the rest of the test.) Numbered ids are tested with their '#' and go into the BITFIELD
    -- as they came: making each offset costs more per buyer than the rest of the loop.
    local bound = bound_of(first[6])
    local raise
    if bound and e_count == 0 and (numbered or array_offset(argv[first_user + 1], bound)) then
        local below, zero = bound, '0'
        if numbered then
            below, zero = '#' .. bound, '#0'
        end
        local below_length = #below
        raise = { 'BITFIELD', keys[7], 'OVERFLOW', 'FAIL' }
        for i = 1, n do
            local user = argv[first_user + i]
            local length = #user
            if length > below_length or (length == below_length and user >= below) or user == zero then
                raise = nil
                break
            end
            local k = 4 * i + 1
            raise[k], raise[k + 1], raise[k + 2], raise[k + 3] = 'INCRBY', TOTAL_TYPE, numbered and user or '#' .. user, '1'
        end
    end
    -- The sets are probed before the first write, so a failed probe changes nothing.
    local flags, held, array, mixed = nil, nil, false, false
    if raise then
        flags = probe_sets(keys[3], keys[4], argv, first_user + 1, n, 1, numbered)
        held = pcall_redis(unpack(raise, 1, 4 + 4 * n))
        array = not held.err
    end
    if numbered and not array then
        for i = first_user + 1, first_user + n do
            argv[i] = string.sub(argv[i], 2)
        end
        numbered = false
    end
    if bound and not array then
        for i = first_user + 1, first_user + n do
            if array_offset(argv[i], bound) then
                mixed = true
                break
            end
        end
    end
    if not mixed then
        if not raise then
            flags = probe_sets(keys[3], keys[4], argv, first_user + 1, n, 1)
        end
        local limit, max_per_order = first[3] + 0, first[4] + 0
        -- In the hash: each buyer's total so far (HMGET), and the HSET of the accepted buyers'
        -- new totals. In the array: each buyer's total with this unit already counted (the
        -- BITFIELD above raised them all; a total that would pass TOTAL_MAX is not raised,
        -- false), and the BITFIELD taking the refused requests' units back. `count`: the
        -- values of the write in use.
        local totals, count
        if array then
            totals, count = { 'BITFIELD', keys[7] }, 2
        else
            held = redis.call('HMGET', keys[6], unpack(argv, first_user + 1, first_user + n))
            totals, count = { 'HSET', keys[6] }, 2
        end
        -- The totals so far of the buyers of the unusual requests; the refused requests'
        -- verdicts.
        local pending, refused = nil, nil
        local accepted, units = 0, 0
        -- The unusual requests come as triples in rising request order: `a` is the next one's.
        local a = 3 + m
        local next_unusual = e_count > 0 and argv[a] + 0
        local quantities
        if array then
            -- One unit each, every buyer alone in the batch, held[i] the total with this unit
            -- (false: it would pass TOTAL_MAX, not raised). A refused unit is taken back.
            if max_per_order < 1 then
                limit = -1
            end
            for i = 1, n do
                local code, h = flags and flags[i], held[i]
                if not code then
                    if not h or h > limit then
                        code = 'L'
                    elseif stock < 1 then
                        code = 'O'
                    else
                        stock, accepted = stock - 1, accepted + 1
                    end
                end
                if code then
                    if h then
                        totals[count + 1], totals[count + 2] = 'INCRBY', TOTAL_TYPE
                        totals[count + 3], totals[count + 4] = raise[4 * i + 3], '-1'
                        count = count + 4
                    end
                    refused = refused or {}
                    refused[i] = code
                end
            end
            units = accepted
        else
            for i = 1, n do
                -- Blacklisted or revoked: its code; else decided below.
                local code = flags and flags[i]
                local h = held[i]
                if i ~= next_unusual then
                    -- One unit, and the buyer's only request in the batch.
                    if not code then
                        local total = h and whole(h) + 1 or 1
                        if max_per_order < 1 or total > limit then
                            code = 'L'
                        elseif stock < 1 then
                            code = 'O'
                        else
                            stock, accepted, units = stock - 1, accepted + 1, units + 1
                            totals[count + 1], totals[count + 2] = argv[first_user + i], h and format('%d', total) or '1'
                            count = count + 2
                        end
                    end
                else
                    local user, passed = argv[first_user + i], argv[a + 2]
                    a = a + 3
                    next_unusual = a < first_user and argv[a] + 0
                    local quantity, quantity_arg = quantity_of(passed)
                    pending = pending or {}
                    quantities = quantities or {}
                    h = pending[user] or h
                    if code then
                        -- Decided above.
                    elseif not quantity then
                        code = 'R'
                    elseif quantity > max_per_order then
                        code = 'L'
                    else
                        local total = h and whole(h) + quantity or quantity
                        if total > limit then
                            code = 'L'
                        elseif stock < quantity then
                            code = 'O'
                        else
                            stock, accepted, units = stock - quantity, accepted + 1, units + quantity
                            pending[user], quantities[i] = total, quantity_arg
                            totals[count + 1], totals[count + 2] = user, h and format('%d', total) or quantity_arg
                            count = count + 2
                        end
                    end
                end
                if code then
                    refused = refused or {}
                    refused[i] = code
                end
            end
        end
        -- The writes: the buyers' totals (or the array's take-back), the entry, the counters.
        -- A failed one does not stop the others (every queued reservation keeps its unit
        -- deducted and its buyer's total); the first failure is raised after them.
        local failure, entry_id = nil, ''
        if count > 2 then
            local r = pcall_redis(unpack(totals, 1, count))
            if type(r) == 'table' and r.err then
                failure = r.err
            end
        end
        if accepted > 0 then
            local users, amounts
            if not refused and e_count == 0 then
                users, amounts = table.concat(argv, ' ', first_user + 1, first_user + n), string.rep('1 ', n - 1) .. '1'
            else
                local buyers, bought, k = {}, {}, 0
                for i = 1, n do
                    if not (refused and refused[i]) then
                        k = k + 1
                        buyers[k], bought[k] = argv[first_user + i], quantities and quantities[i] or '1'
                    end
                end
                users, amounts = table.concat(buyers, ' ', 1, k), table.concat(bought, ' ', 1, k)
            end
            entry_id = pcall_redis('XADD', keys[2], '*', 'activity', activity[4], 'reserved_ms', format('%d', now_ms),
                'product', argv[2], 'price', first[5], numbered and 'buyer_numbers' or 'buyers', users,
                'quantities', amounts)
            -- A string's .err is nil (the string library), an error reply's its message.
            if entry_id.err then
                failure, entry_id = failure or entry_id.err, ''
            end
            pcall_redis('HSET', keys[5], 'stock', format('%d', stock), 'sold', format('%d', (tonumber(first[2]) or 0) + units))
        end
        if failure then
            error(failure, 0)
        end
        local verdicts
        if not refused then
            verdicts = string.rep('.', n)
        else
            local codes = {}
            for i = 1, n do
                codes[i] = refused[i] or '.'
            end
            verdicts = table.concat(codes)
        end
        if accepted > 0 then
            return verdicts .. ' ' .. first[1] .. ' ' .. entry_id
        end
        return verdicts .. ' ' .. first[1]
    end
end

-- A batch of several products.
-- The batch's products: {key, bought_key, totals_key, bound, id, stock, sold, limit,
-- max_per_order, price, dirty, held, slot, arrayed, offset, pending, totals, count, sets,
-- set_count} (stock == nil: no such product). held is the HMGET reply of the totals of its
-- buyers kept in the bought hash and slot[i] request i's place in it; arrayed the BITFIELD_RO
-- reply of those kept in the totals array (lib/totals.lua), offset[i] request i's offset there
-- and its place in arrayed; pending[user] the buyer's total after this batch's accepted
-- purchases, for the buyers who need one (see ARGV[2+M]); totals the HSET writing the accepted
-- buyers' hash totals back, its first `count` arguments after the key in use; sets the
-- BITFIELD writing their array totals, its first `set_count` arguments after the key in use.
local products = {}
-- Runs a command; a failed one is raised as a plain Lua error, which the pcall around the
-- batch below catches to write the counters back before the script aborts.
local function call(...)
    local reply = pcall_redis(...)
    if type(reply) == 'table' and reply.err then
        error(reply.err, 0)
    end
    return reply
end
-- Runs the first `used` values of `command` when it has more than its name and key; returns
-- its error, if it failed.
local function failure_of(command, used)
    if used > 2 then
        local r = pcall_redis(unpack(command, 1, used))
        if type(r) == 'table' and r.err then
            return r.err
        end
    end
    return nil
end
-- Writes the accepted buyers' totals, in the hash and in the array; returns the first failure,
-- which is raised after the rest of the batch's effects are written.
local function write_totals()
    local failure
    for _, p in ipairs(products) do
        local hashed = failure_of(p.totals, p.count + 2)
        local arrayed = failure_of(p.sets, p.set_count + 2)
        failure = failure or hashed or arrayed
    end
    return failure
end
local function write_back()
    for _, p in ipairs(products) do
        if p.dirty then
            pcall_redis('HSET', p.key, 'stock', format('%d', p.stock), 'sold', format('%d', p.sold))
        end
    end
end
-- The answer's parts: the verdicts, each product's stock, the entry id (see the header).
local reply = { '' }
for j = 1, m do
    local key, bought_key, totals_key = keys[2 + 3 * j], keys[3 + 3 * j], keys[4 + 3 * j]
    local h = redis.call('HMGET', key, 'stock', 'sold', 'limit', 'max_per_order', 'price', 'ids_below')
    local stock = tonumber(h[1])
    products[j] = { key = key, bought_key = bought_key, totals_key = totals_key, bound = bound_of(h[6]),
        id = argv[1 + j], stock = stock, sold = tonumber(h[2]) or 0, limit = tonumber(h[3]),
        max_per_order = tonumber(h[4]), price = h[5], dirty = false,
        pending = {}, totals = { 'HSET', bought_key }, count = 0,
        sets = { 'BITFIELD', totals_key }, set_count = 0 }
    reply[1 + j] = stock and h[1] or '-1'
end
-- The unusual requests' product places and quantities, by request number.
local places, quantities = {}, {}
for k = 0, e_count - 1 do
    local a = 3 + m + 3 * k
    local i = tonumber(argv[a])
    places[i], quantities[i] = tonumber(argv[a + 1]), argv[a + 2]
end
if refusal then
    -- The whole batch is refused: nothing to read or write.
    local codes = {}
    for i = 1, n do
        codes[i] = (refusal ~= 'S' and not products[places[i] or 1].stock) and 'N' or refusal
    end
    reply[1] = table.concat(codes)
    return table.concat(reply, ' ')
end
local flags = probe_sets(keys[3], keys[4], argv, first_user + 1, n, 1)
local codes = {}
local entry = { 'XADD', keys[2], '*', 'activity', activity[4], 'reserved_ms', format('%d', now_ms) }
local buyers, bought = {}, {}
local run_product, run_len, queued = nil, 0, 0
-- The purchases queued since the last change of product, as one run of the entry.
local function close_run()
    if run_len > 0 then
        local e = #entry
        entry[e + 1], entry[e + 2], entry[e + 3], entry[e + 4] = 'product', run_product.id, 'price', run_product.price
        entry[e + 5], entry[e + 6] = 'buyers', table.concat(buyers, ' ', 1, run_len)
        entry[e + 7], entry[e + 8] = 'quantities', table.concat(bought, ' ', 1, run_len)
        run_len = 0
    end
end
-- Reads the totals of the batch's buyers of product p (at place j): with one HMGET of those
-- kept in the bought hash and one BITFIELD_RO of those kept in the totals array.
local function fetch(p, j)
    local users, slot, count = {}, {}, 0
    local get, offset, got = { 'BITFIELD_RO', p.totals_key }, {}, 0
    for i = 1, n do
        if (places[i] or 1) == j then
            local user = argv[first_user + i]
            local at = array_offset(user, p.bound)
            if at then
                got = got + 1
                get[3 * got], get[3 * got + 1], get[3 * got + 2] = 'GET', TOTAL_TYPE, at
                offset[i] = got
            else
                count = count + 1
                users[count], slot[i] = user, count
            end
        end
    end
    p.held, p.slot, p.offset = count > 0 and call('HMGET', p.bought_key, unpack(users, 1, count)) or {}, slot, offset
    p.arrayed = got > 0 and call(unpack(get, 1, 2 + 3 * got)) or {}
    p.get = get
end
-- Decides every request in order; codes[i] is request i's verdict character. Returns the
-- verdicts. A usual request's buyer is alone in the batch (see ARGV[2+M]): only the unusual
-- requests' buyers are kept in pending.
local function decide_all()
    for i = 1, n do
        local code
        local place = places[i]
        local p = products[place or 1]
        local user = argv[first_user + i]
        local quantity, quantity_arg = 1, '1'
        if place then
            quantity, quantity_arg = quantity_of(quantities[i])
        end
        local stock = p.stock
        if not stock then
            code = 'N'
        elseif flags and flags[i] then
            code = flags[i]
        elseif not quantity then
            code = 'R'
        elseif quantity > p.max_per_order then
            code = 'L'
        else
            local pending = place and p.pending
            local held = pending and pending[user]
            if not p.held then
                fetch(p, place or 1)
            end
            -- The request's place in the totals array's read, when its total lives there.
            local arrayed = p.offset[i]
            if not held then
                if arrayed then
                    held = p.arrayed[arrayed]
                else
                    held = p.held[p.slot[i]]
                end
            end
            local total = held and whole(held) + quantity or quantity
            if total > p.limit or (arrayed and total > TOTAL_MAX) then
                code = 'L'
            elseif stock < quantity then
                code = 'O'
            else
                p.stock, p.sold, p.dirty = stock - quantity, p.sold + quantity, true
                if pending then
                    pending[user] = total
                end
                if arrayed then
                    local c = p.set_count
                    p.sets[c + 3], p.sets[c + 4] = 'SET', TOTAL_TYPE
                    p.sets[c + 5], p.sets[c + 6] = p.get[3 * arrayed + 2], format('%d', total)
                    p.set_count = c + 4
                else
                    local count = p.count
                    p.totals[count + 3], p.totals[count + 4] = user, held and format('%d', total) or quantity_arg
                    p.count = count + 2
                end
                if p ~= run_product then
                    close_run()
                    run_product = p
                end
                run_len = run_len + 1
                buyers[run_len], bought[run_len] = user, quantity_arg
                queued = queued + 1
                code = '.'
            end
        end
        codes[i] = code
    end
    return table.concat(codes)
end
-- Queues the accepted purchases, if any, as one entry.
local function append()
    close_run()
    if queued > 0 then
        reply[2 + m] = call(unpack(entry))
    end
end
-- The purchases decided before a failed command are deducted, so they are queued even then.
local ok, verdicts = pcall(decide_all)
local totals_err = write_totals()
local added, add_err = pcall(append)
write_back()
if not ok then error(verdicts, 0) end
if totals_err then error(totals_err, 0) end
if not added then error(add_err, 0) end
reply[1] = verdicts
return table.concat(reply, ' ')
