import GenKit
print("gen")
