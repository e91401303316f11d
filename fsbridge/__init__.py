"""fsbridge: hand a FreeSWITCH call to OpenAI Realtime, both ways, interruptibly."""

__version__ = "0.1.0"
