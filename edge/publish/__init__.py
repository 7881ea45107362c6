"""Publishing: the event protocol, the Unix/TCP socket server, and the client that apps and commands use."""
