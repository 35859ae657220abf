"""HarmonyCell prompts."""
