"""Stand-in for ComfyUI's ``folder_paths`` (the functions our nodes and tests use)."""
from __future__ import annotations

import os
import tempfile

supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}

base_path = os.environ.get("COMFY_STUB_BASE") or tempfile.mkdtemp(prefix="comfy_stub_")
models_dir = os.path.join(base_path, "models")
output_directory = os.path.join(base_path, "output")
temp_directory = os.path.join(base_path, "temp")
input_directory = os.path.join(base_path, "input")
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}


def reset(base) -> None:
    global base_path, models_dir, output_directory, temp_directory, input_directory
    base_path = str(base)
    models_dir = os.path.join(base_path, "models")
    output_directory = os.path.join(base_path, "output")
    temp_directory = os.path.join(base_path, "temp")
    input_directory = os.path.join(base_path, "input")
    for d in (models_dir, output_directory, temp_directory, input_directory):
        os.makedirs(d, exist_ok=True)
    folder_names_and_paths.clear()
    folder_names_and_paths["checkpoints"] = ([os.path.join(models_dir, "checkpoints")], supported_pt_extensions)


def get_output_directory() -> str:
    return output_directory


def get_input_directory() -> str:
    return input_directory


def get_temp_directory() -> str:
    return temp_directory


def get_directory_by_type(type_name: str):
    return {"output": output_directory, "temp": temp_directory, "input": input_directory}.get(type_name)


def annotated_filepath(name: str):
    for tag, base in (("[output]", output_directory), ("[input]", input_directory), ("[temp]", temp_directory)):
        if name.endswith(tag):
            return name[: -len(tag) - 1], base
    return name, None


def get_annotated_filepath(name: str, default_dir=None) -> str:
    name, base = annotated_filepath(name)
    return os.path.join(base or default_dir or input_directory, name)


def exists_annotated_filepath(name) -> bool:
    name, base = annotated_filepath(name)
    return os.path.exists(os.path.join(base or input_directory, name))


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    if folder_name in folder_names_and_paths:
        paths = folder_names_and_paths[folder_name][0]
        if full_folder_path in paths:
            if is_default and paths[0] != full_folder_path:
                paths.remove(full_folder_path)
                paths.insert(0, full_folder_path)
        elif is_default:
            paths.insert(0, full_folder_path)
        else:
            paths.append(full_folder_path)
    else:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())


def get_folder_paths(folder_name: str) -> list[str]:
    return folder_names_and_paths[folder_name][0][:]


def _walk(directory: str) -> list[str]:
    out = []
    for dirpath, subdirs, files in os.walk(directory, followlinks=True):
        subdirs[:] = [d for d in subdirs if d != ".git"]
        out += [os.path.relpath(os.path.join(dirpath, f), directory) for f in files]
    return out


def get_filename_list(folder_name: str) -> list[str]:
    paths, exts = folder_names_and_paths[folder_name]
    found = set()
    for p in paths:
        if os.path.isdir(p):
            found.update(f for f in _walk(p) if not exts or os.path.splitext(f)[1].lower() in exts)
    return sorted(found)


def get_full_path(folder_name: str, filename: str):
    if folder_name not in folder_names_and_paths:
        return None
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for p in folder_names_and_paths[folder_name][0]:
        full = os.path.join(p, filename)
        if os.path.isfile(full):
            return full
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    full = get_full_path(folder_name, filename)
    if full is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return full


def get_save_image_path(filename_prefix: str, output_dir: str, image_width=0, image_height=0):
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((output_dir, os.path.abspath(full_output_folder))) != output_dir:
        raise Exception("Saving outside the output folder is not allowed.")
    os.makedirs(full_output_folder, exist_ok=True)
    counters = []
    for f in os.listdir(full_output_folder):
        if f.startswith(filename + "_"):
            try:
                counters.append(int(f[len(filename) + 1:].split("_")[0]))
            except ValueError:
                pass
    return full_output_folder, filename, max(counters, default=0) + 1, subfolder, filename_prefix


reset(base_path)
