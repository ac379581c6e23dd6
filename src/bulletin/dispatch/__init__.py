"""Sending: the engine decides what to send and records it; transports only deliver bytes."""
