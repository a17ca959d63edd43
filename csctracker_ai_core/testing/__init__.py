"""Test helpers shipped with the library: a Gemini emulator and pytest fixtures."""
