-- lib/totals.lua: not a script of its own. src/scripts.rs puts it in front of reserve.lua,
-- release.lua and repair_bought.lua, the scripts that read or write a buyer's units of a
-- product without stock buckets, so all of them find a total in the one same place
-- (src/totals.rs holds the same rule for Rust).
--
-- Where a total lives: a buyer whose user id is a whole number (digits only, no leading zero)
-- below the product's `ids_below` (its hash field, stamped by `hot`; 0 or missing: none) keeps
-- it in the product's totals array P:{a:A}:totals:ID, a string read and written with BITFIELD
-- as TOTAL_TYPE at index = the id; every other buyer in the bought hash P:{a:A}:bought:ID.
-- A total above TOTAL_MAX cannot be kept in the array (`hot` stamps no bound on a product whose
-- limit is higher): a purchase that would make one is refused as over the limit.
local TOTAL_TYPE, TOTAL_MAX = 'u16', 65535
-- A product's `ids_below` field as stored (a whole number `hot` wrote, or false when missing) as
-- the bound array_offset takes: the field when it is a positive whole number, else nil (no
-- array).
local function bound_of(field)
    if field and string.find(field, '^[1-9]%d*$') then
        return field
    end
    return nil
end
-- The BITFIELD offset ('#<id>': the id-th TOTAL_TYPE) of `user`'s total when it lives in the
-- array of a product whose bound (from bound_of) is `bound`, else nil. Compared as strings,
-- which converts nothing: a number below the bound has fewer digits, or as many and sorts
-- first.
local function array_offset(user, bound)
    local length = #user
    if bound and (length < #bound or (length == #bound and user < bound)) and string.find(user, '^[1-9]%d*$') then
        return '#' .. user
    end
    return nil
end
