"""Test helpers shipped with the provider (the local Segmind emulator)."""
