"""HarmonyCell sandbox."""
