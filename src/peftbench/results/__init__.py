"""Result files: the layout (schema.py), atomic writing (writer.py), reading for analysis (reader.py)."""
