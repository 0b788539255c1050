"""The web pages (`cxr-screen web`): results, scans, reviews, models, service, metrics."""
