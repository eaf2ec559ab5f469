"""What inboxcheck keeps in Redis and in what shape: key names, Lua scripts, the job envelope
and payload, sealed credentials, events and the stream, and the producer that writes jobs."""
