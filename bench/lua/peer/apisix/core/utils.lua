-- apisix.core.utils for the bench: only sleep (consul_kv's retry wait).
return { sleep = function(sec) return ngx.sleep(sec) end }
