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
-- array of a product whose `ids_below` field is `below` (as stored: a whole number `hot` wrote,
-- or false when missing), else nil. Compared as strings, which converts nothing: a number
-- below the bound has fewer digits, or as many and sorts first.
local function array_offset(user, below)
    if below and #user <= #below and string.find(user, '^[1-9]%d*$') and string.find(below, '^[1-9]%d*$')
        and (#user < #below or user < below) then
        return '#' .. user
    end
    return nil
end
