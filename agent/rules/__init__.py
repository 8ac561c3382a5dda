"""Business rules read from settings: numbers, opening hours, SMS texts, intents, routing."""
