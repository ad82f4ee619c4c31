"""The networks: layers, the LDN assembled from any stem, block and head, the paper's presets."""
