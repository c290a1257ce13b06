"""The slave runtime: the handler loop and its task feed, time limits, leaving
and rejoining, and the node agent that serves several slaves of one host."""
