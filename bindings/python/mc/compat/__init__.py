"""Drop-in faces of other transfer engines' Python APIs over mc (mc.compat.mooncake)."""
