"""What crosses a socket: the protocol's calls and records, pickled payloads and
their out-of-band buffers, authentication and TLS, the master's Pyro5 server,
the client connection and finding a master by its label."""
