"""Dataset indexes: read the official split/annotation layouts into a :class:`DatasetIndex`.

One module per layout (:mod:`.ucf101`, :mod:`.hmdb51`, :mod:`.kinetics`, :mod:`.folder`,
:mod:`.framelist`), the shared resolver in :mod:`.common`, folder walking in :mod:`.walk`.

Every index resolves the entries its annotation names through one :class:`_Resolver`, which
lists each directory once and then matches

1. the exact name,
2. the name case-insensitively (``HandStandPushups`` vs ``HandstandPushups``, for folders
   and files alike),
3. the stem: the list says ``x.avi`` and the disk holds ``x.mp4`` (or ``.mkv``, a frame
   folder ``x/``, ...). This is logged once per index build.

Entries not found on disk go to ``DatasetIndex.missing`` and are reported in one log line;
they are never fatal. An index in which *no* entry is found raises :class:`VidkdError`.

List files are read as UTF-8 with an optional byte-order mark (:func:`vidkd.files.read_text`).
Directory walks enter each real directory once (:class:`VisitedDirs`): a symlink back to a
directory already walked (a loop) or one that cannot be resolved is skipped with one
warning. ``*.partial`` names (unfinished ``vidkd prepare`` outputs) are never indexed.
"""

from vidkd.data.index.folder import folder_index, split_layout, split_layout_classes
from vidkd.data.index.framelist import frame_list_index, is_frame_list
from vidkd.data.index.hmdb51 import hmdb51_index
from vidkd.data.index.kinetics import kinetics_index, read_classes_file
from vidkd.data.index.split import split_train_val
from vidkd.data.index.ucf101 import ucf101_index
from vidkd.data.index.walk import FRAME_EXTENSIONS, VIDEO_EXTENSIONS, VisitedDirs

__all__ = [
    "FRAME_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "VisitedDirs",
    "folder_index",
    "frame_list_index",
    "is_frame_list",
    "hmdb51_index",
    "kinetics_index",
    "read_classes_file",
    "split_layout",
    "split_layout_classes",
    "split_train_val",
    "ucf101_index",
]
