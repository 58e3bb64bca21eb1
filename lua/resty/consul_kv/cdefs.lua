-- Generated from include/ckv.h by scripts/gen-cdefs.py. Do NOT edit.
-- The one place where the C declarations of libckv are given to LuaJIT.
local ffi = require("ffi")

local bit = require("bit")
local lshift = bit.lshift

local _M = {
    MAX_CONFIG_BYTES = lshift(1, 20),
    MAX_NAME_BYTES = 4096,
    ABI_VERSION = 1,
}

-- Declared once per LuaJIT VM: the C namespace is shared by all modules.
if not pcall(ffi.typeof, "struct ckv_handle") then
    ffi.cdef[[
    typedef enum ckv_status {
      CKV_OK = 0,
      CKV_ERR_NULL_ARGUMENT = 1,
      CKV_ERR_INVALID_UTF8 = 2,
      CKV_ERR_INVALID_CONFIG = 3,
      CKV_ERR_NOT_FOUND = 4,
      CKV_ERR_BUFFER_TOO_SMALL = 5,
      CKV_ERR_FORKED = 6,
      CKV_ERR_EMPTY = 7,
      CKV_ERR_START = 8,
      CKV_ERR_TOO_LARGE = 9,
      CKV_ERR_TIMEOUT = 10,
      CKV_ERR_PANIC = 99,
    } ckv_status;
    typedef struct ckv_handle ckv_handle;
    enum ckv_status ckv_init(const uint8_t *config, size_t config_len, struct ckv_handle **out, uint8_t *errbuf, size_t *errbuf_len);
    const uint32_t *ckv_generation_ptr(const struct ckv_handle *h);
    enum ckv_status ckv_stats(const struct ckv_handle *h, uint8_t *buf, size_t buf_cap, size_t *out_len);
    enum ckv_status ckv_shutdown(struct ckv_handle *h, uint32_t timeout_ms);
    void ckv_free(struct ckv_handle *h);
    enum ckv_status ckv_log_next(const struct ckv_handle *h, uint8_t *buf, size_t buf_cap, size_t *out_len, int32_t *out_level);
    enum ckv_status ckv_nodes(const struct ckv_handle *h, const uint8_t *name, size_t name_len, uint8_t *buf, size_t buf_cap, size_t *out_len, uint64_t *out_generation);
    enum ckv_status ckv_service_generation(const struct ckv_handle *h, const uint8_t *name, size_t name_len, uint64_t *out_generation);
    enum ckv_status ckv_all_nodes(const struct ckv_handle *h, uint8_t *buf, size_t buf_cap, size_t *out_len, uint64_t *out_seq);
    uint32_t ckv_abi_version(void);
    const char *ckv_version(void);
    const char *ckv_status_str(int32_t status);
    ]]
end

return _M
