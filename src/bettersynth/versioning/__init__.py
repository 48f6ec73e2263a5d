"""DVC: every dataset variant versioned, pushed and checked out by hash."""
