"""Real aiohttp servers on loopback."""
