"""A small, generic controller runtime on lightkube (async).

informer (list+watch cache), workqueue (keys, backoff, requeue-after), leader (Lease),
events (aggregated Event recorder), patch (merge patches with preconditions, apply),
resources (OS and OSInstance classes), client (config loading), probes (metrics and health
endpoints). It knows nothing of the operator or the proxy, which both build on it.
"""
