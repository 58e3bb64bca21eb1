-- Generated from include/ckv.h by scripts/gen-cdefs.py. Do NOT edit.
-- The one place where the C declarations of libckv are given to LuaJIT.
local ffi = require("ffi")

local bit = require("bit")
local lshift = bit.lshift

local _M = {
    MAX_NAME_BYTES = 4096,
    MAX_CONFIG_BYTES = lshift(1, 20),
    NODE_HAS_MAX_FAILS = 1,
    NODE_HAS_FAIL_TIMEOUT = 2,
    NODE_HAS_PRIORITY = 4,
    ABI_VERSION = 1,
    -- ckv_status
    OK = 0,
    ERR_NULL_ARGUMENT = 1,
    ERR_INVALID_UTF8 = 2,
    ERR_INVALID_CONFIG = 3,
    ERR_NOT_FOUND = 4,
    ERR_BUFFER_TOO_SMALL = 5,
    ERR_FORKED = 6,
    ERR_EMPTY = 7,
    ERR_START = 8,
    ERR_TOO_LARGE = 9,
    ERR_TIMEOUT = 10,
    ERR_PANIC = 99,
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
    typedef struct ckv_node_list ckv_node_list;
    typedef struct ckv_service_list ckv_service_list;
    typedef struct ckv_node {
      const uint8_t *host;
      size_t host_len;
      const uint8_t *metadata;
      size_t metadata_len;
      double fail_timeout;
      uint64_t max_fails;
      int64_t priority;
      uint32_t weight;
      uint32_t present;
      uint16_t port;
    } ckv_node;
    uint64_t ckv_change_seq(const struct ckv_handle *h);
    enum ckv_status ckv_wait_change(const struct ckv_handle *h, uint64_t seen_seq, uint32_t timeout_ms, uint64_t *out_seq);
    int32_t ckv_notify_fd(const struct ckv_handle *h);
    enum ckv_status ckv_init(const uint8_t *config, size_t config_len, struct ckv_handle **out, uint8_t *errbuf, size_t *errbuf_len);
    const uint32_t *ckv_generation_ptr(const struct ckv_handle *h);
    int32_t ckv_ready(const struct ckv_handle *h);
    enum ckv_status ckv_stats(const struct ckv_handle *h, uint8_t *buf, size_t buf_cap, size_t *out_len);
    enum ckv_status ckv_metrics(const struct ckv_handle *h, uint8_t *buf, size_t buf_cap, size_t *out_len);
    enum ckv_status ckv_shutdown(struct ckv_handle *h, uint32_t timeout_ms);
    void ckv_free(struct ckv_handle *h);
    enum ckv_status ckv_log_next(const struct ckv_handle *h, uint8_t *buf, size_t buf_cap, size_t *out_len, int32_t *out_level);
    enum ckv_status ckv_nodes_get(const struct ckv_handle *h, const uint8_t *name, size_t name_len, const struct ckv_node_list **out);
    size_t ckv_node_list_len(const struct ckv_node_list *list);
    enum ckv_status ckv_node_list_get(const struct ckv_node_list *list, size_t index, struct ckv_node *out);
    uint64_t ckv_node_list_generation(const struct ckv_node_list *list);
    uint64_t ckv_node_list_seq(const struct ckv_node_list *list);
    void ckv_node_list_free(const struct ckv_node_list *list);
    enum ckv_status ckv_nodes(const struct ckv_handle *h, const uint8_t *name, size_t name_len, uint8_t *buf, size_t buf_cap, size_t *out_len, uint64_t *out_generation);
    enum ckv_status ckv_service_generation(const struct ckv_handle *h, const uint8_t *name, size_t name_len, uint64_t *out_generation);
    enum ckv_status ckv_all_nodes(const struct ckv_handle *h, uint8_t *buf, size_t buf_cap, size_t *out_len, uint64_t *out_seq);
    enum ckv_status ckv_services_get(const struct ckv_handle *h, const struct ckv_service_list **out);
    size_t ckv_service_list_len(const struct ckv_service_list *list);
    enum ckv_status ckv_service_list_name(const struct ckv_service_list *list, size_t index, const uint8_t **out_name, size_t *out_len);
    enum ckv_status ckv_service_list_nodes(const struct ckv_service_list *list, size_t index, const struct ckv_node_list **out);
    uint64_t ckv_service_list_seq(const struct ckv_service_list *list);
    void ckv_service_list_free(const struct ckv_service_list *list);
    const char *ckv_status_str(int32_t status);
    uint32_t ckv_abi_version(void);
    const char *ckv_version(void);
    ]]
end

return _M
