"""HarmonyCell tools."""
