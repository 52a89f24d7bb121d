"""Everything about the game itself: the pinned simulator, its server, its protocol."""
