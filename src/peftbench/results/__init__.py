"""Result files: the record (record.py), its layout and atomic writing (writer.py), reading (reader.py)."""
