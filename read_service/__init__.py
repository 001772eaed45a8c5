"""The read service: answers order queries from the read database, with freshness attached."""
