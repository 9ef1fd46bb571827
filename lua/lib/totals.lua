-- lib/totals.lua: not a script of its own. src/scripts.rs puts it in front of reserve.lua,
-- release.lua and repair_bought.lua, the scripts that read or write a buyer's units of a
-- product without stock buckets, so all of them find a total in the one same place
-- (src/totals.rs holds the same rule for Rust).
--
-- Where a total lives: a buyer whose user id is a whole number (digits only, no leading zero)
-- below the product's `ids_below` (its hash field, stamped by `hot`; 0 or missing: none) keeps
-- it in the product's totals array P:{a:A}:totals:ID, a string read and written with BITFIELD
-- as TOTAL_TYPE at index = the id; every other buyer in the bought hash P:{a:A}:bought:ID.
-- A total above TOTAL_MAX cannot be kept in the array: a purchase that would make one is
-- refused as over the limit.
local TOTAL_TYPE, TOTAL_MAX = 'u16', 65535
-- The BITFIELD offset ('#<id>': the id-th TOTAL_TYPE) of `user`'s total when it lives in the
-- array below `below` (a number), else nil.
local function array_offset(user, below)
    if below > 0 and #user <= 8 and string.find(user, '^[1-9]%d*$') and user + 0 < below then
        return '#' .. user
    end
    return nil
end
