// The book theme's FontAwesome replaces <i> icons by <svg>; inside ipywidgets' Play button that breaks the widget and
// stops jslink propagation. "nest" keeps the original element, so the kernel-free widgets keep working.
window.FontAwesomeConfig = { autoReplaceSvg: "nest" };
