"""JSON-RPC 2.0 over unix stream sockets: framing (``framing``) and the server (``server``)."""
