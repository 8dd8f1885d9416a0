"""The load side (Locust users, load shapes, message factory) and the library of ready scenario files."""
