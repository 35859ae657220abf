"""HarmonyCell agents."""
