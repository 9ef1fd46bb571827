-- lib/bucket_entry.lua: not a script of its own. src/scripts.rs puts it in front of
-- bucket_buy.lua and bucket_reserve.lua, the two scripts that queue purchases in a stock
-- bucket's stream, so both write the entry, and number it, the one same way.
--
-- bucket_entry(stream_key, activity, now_ms) returns a writer for ONE stream entry in the
-- format reserve.lua writes (activity, reserved_ms, then per run of consecutive purchases of
-- one product: product, price, buyers, quantities; decoded in src/reservation/entry.rs):
--   writer.queue(p, user, quantity_arg)  queues a purchase of product p ({id, price}); returns
--                                        its index in the entry (from 0)
--   writer.queued()                      how many purchases are queued
--   writer.append(seq_key, base, bucket) adds the entry, when anything is queued, under the id
--                                        <ms>-<base + n * 1024 + bucket>, n counting the
--                                        bucket's entries of that millisecond (kept in the
--                                        hash seq_key: ms, n), so an order number is unique
--                                        across the activity's streams and names its bucket;
--                                        returns the XADD's answer (nil when nothing queued)
local function bucket_entry(stream_key, activity, now_ms)
    local entry = { 'XADD', stream_key, '', 'activity', activity, 'reserved_ms', string.format('%d', now_ms) }
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
    local writer = {}
    function writer.queue(p, user, quantity_arg)
        if p ~= run_product then
            close_run()
            run_product = p
        end
        run_len = run_len + 1
        buyers[run_len], bought[run_len] = user, quantity_arg
        queued = queued + 1
        return queued - 1
    end
    function writer.queued()
        return queued
    end
    function writer.append(seq_key, base, bucket)
        if queued == 0 then
            return nil
        end
        close_run()
        local last_id = redis.call('HMGET', seq_key, 'ms', 'n')
        local ms, k = now_ms, 0
        local last_ms = tonumber(last_id[1])
        if last_ms and last_ms >= now_ms then
            ms, k = last_ms, tonumber(last_id[2]) + 1
        end
        local ms_str = string.format('%d', ms)
        redis.call('HSET', seq_key, 'ms', ms_str, 'n', string.format('%d', k))
        entry[3] = ms_str .. '-' .. string.format('%d', base + k * 1024 + bucket)
        return redis.call(unpack(entry))
    end
    return writer
end
