"""Rate limiting: the generic cell rate algorithm, in this process or shared through Redis."""
