"""LiteRT (.tflite): placeholder until the LiteRT row lands."""

ROW = None
