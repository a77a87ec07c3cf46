"""Text helpers shared by stages: shopper noise (typos), script detection."""
