"""ThermoPilot wire protocol: one construct schema, COBS+CRC-32 framing, the link session."""

from .schema import MESSAGES, PROTOCOL_VERSION, SCHEMA_HASH, by_id, by_name

__all__ = ["MESSAGES", "PROTOCOL_VERSION", "SCHEMA_HASH", "by_id", "by_name"]
