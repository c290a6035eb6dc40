"""The command-line tools, one module each, installed as commands (see setup.py):

    retdet-train            retdet.tools.train_net        train / evaluate / resume from a config
    retdet-benchmark        retdet.tools.benchmark        speed against torchvision, data loader, ops
    retdet-demo             retdet.tools.demo             a trained model on images or a video
    retdet-export           retdet.tools.export           TorchScript / ONNX, checked against the eager model
    retdet-analyze          retdet.tools.analyze_model    parameters and FLOPs
    retdet-analyze-errors   retdet.tools.analyze_errors   why a detector misses: error kinds, confusion matrix
    retdet-analyze-anchors  retdet.tools.analyze_anchors  anchor coverage of the training boxes, anchor search
    retdet-visualize        retdet.tools.visualize_data   what the model sees after augmentation
    retdet-convert-weights  retdet.tools.convert_weights  torchvision, Detectron2, MMDetection weights
    retdet-convert-dataset  retdet.tools.convert_dataset  a Pascal VOC or YOLO dataset as a COCO json
    retdet-quantize         retdet.tools.quantize         post-training int8 quantization of the network
    retdet-prune            retdet.tools.prune            structured pruning: whole channels out of the network
    retdet-soak             retdet.tools.soak             a long run with faults: leaks and exact resume

``python -m retdet.tools.NAME`` runs the same; in a checkout, ``python tools/NAME.py`` too.
"""
